"""The embedded broker of `make run`: kombu's filesystem transport, made safe for readers.

kombu's `filesystem://` writes a message by creating its file, then locking and writing it, while a
reader lists the folder and takes any file without the lock: a reader can take a file that is
still empty (the message is then lost, and `json.loads("")` raises in the worker's consumer, which
stopped the whole demo). Here:

- a message is written under a temporary name that no reader looks at, flushed, then renamed into
  place: a rename is atomic, so readers only ever see complete messages;
- a file that still cannot be decoded (left by an older writer, or damaged) is moved to the
  `bad_folder` (default `<data_folder_in>/../bad`) and logged, and the reader goes on with the
  next one: one bad file never stops the consumer.

Selected in settings (CELERY_BROKER_TRANSPORT) when CELERY_BROKER_URL is `filesystem://`.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import uuid
from queue import Empty
from time import time_ns
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import bytes_to_str, str_to_bytes
from kombu.utils.json import dumps, loads

logger = logging.getLogger(__name__)

_TEMP_PREFIX = ".writing-"


class Channel(filesystem.Channel):
    # kombu's filesystem Channel's signature (its AbstractChannel names the argument `message`).
    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:  # type: ignore[override]
        """Write the message under a temporary name, then rename it into the queue at once."""
        # Readers take files in name order: a fixed-width wall-clock prefix keeps that the order
        # of writing (unpadded numbers sort "1_x" after "12_y", and monotonic restarts at boot).
        name = f"{time_ns():020d}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        temporary = os.path.join(self.data_folder_out, _TEMP_PREFIX + name)
        try:
            with open(temporary, "wb") as handle:
                handle.write(str_to_bytes(dumps(payload)))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, final)
        except OSError as exc:
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc

    def _get(self, queue: str, timeout: float | None = None) -> Any:
        """The oldest decodable message of `queue`; undecodable files are set aside."""
        wanted = f"{queue}.msg"
        for name in sorted(os.listdir(self.data_folder_in)):
            if name.startswith(_TEMP_PREFIX) or name.partition(".")[2] != wanted:
                continue
            taken = os.path.join(self._taken_folder, name)
            try:
                shutil.move(os.path.join(self.data_folder_in, name), taken)
            except OSError:
                continue  # another consumer took it first
            try:
                with open(taken, "rb") as handle:
                    payload = handle.read()
            except OSError as exc:
                raise ChannelError(f"Cannot read file {taken!r} from queue.") from exc
            try:
                message = loads(bytes_to_str(payload))
            except ValueError:
                self._set_aside(taken, name, len(payload))
                continue
            if not self.store_processed:
                os.remove(taken)
            return message
        raise Empty()

    @property
    def _taken_folder(self) -> str:
        return str(self.processed_folder) if self.store_processed else tempfile.gettempdir()

    @property
    def bad_folder(self) -> str:
        default = os.path.join(os.path.dirname(os.path.abspath(self.data_folder_in)), "bad")
        return str(self.transport_options.get("bad_folder", default))

    def _set_aside(self, taken: str, name: str, size: int) -> None:
        os.makedirs(self.bad_folder, exist_ok=True)
        target = os.path.join(self.bad_folder, name)
        shutil.move(taken, target)
        logger.error("broker message %s is not a message (%d bytes): moved to %s", name, size, target)


class Transport(filesystem.Transport):
    Channel = Channel
