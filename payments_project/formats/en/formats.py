"""Dates as staff read them everywhere in the console: ISO order, 24-hour clock, in UTC (TIME_ZONE),
the style the customer and event pages already use ("2027-02-01 09:00", not "Feb. 1, 2027, 9 a.m."),
so dates on one page compare at a glance. Input formats stay Django's."""

DATE_FORMAT = "Y-m-d"
DATETIME_FORMAT = "Y-m-d H:i"
TIME_FORMAT = "H:i"
SHORT_DATE_FORMAT = "Y-m-d"
SHORT_DATETIME_FORMAT = "Y-m-d H:i"
