"""The catalog: features, plans and their feature limits, list prices, pricing zones with their
countries and prices, and the Stripe products and prices that mirror them."""
