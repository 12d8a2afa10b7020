"""The embedded broker and result store (``filesystem://``, ``file://``), made crash-free.

kombu's file transport writes a message by opening ``<name>.msg`` and then writing to it,
while a consuming worker lists the folder, moves each ``*.msg`` file away and reads it,
without taking the writer's lock. A worker that polls between the writer's ``open`` and
its ``write`` reads an empty file, fails to decode it and stops with "Unrecoverable
error: JSONDecodeError". Celery's file result backend has the same gap (a reader may see
a truncated reply). Here both write to a temporary name the other side ignores and
rename it into place, which is atomic on one file system.

Importing this module points the ``filesystem`` transport and the ``file`` result
backend aliases at these classes; ``dust.worker.app`` imports it before creating the app.
"""

from __future__ import annotations

import os
import uuid
from time import monotonic
from typing import Any

from celery.app import backends as celery_backends
from celery.backends.filesystem import FilesystemBackend
from kombu import transport as kombu_transport
from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import bytes_to_str, ensure_bytes, str_to_bytes
from kombu.utils.json import dumps, loads

from dust.worker import dead_letters


class Channel(filesystem.Channel):
    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:
        """Put a message on ``queue``: written under a name no consumer picks up
        (``.<uuid>.tmp``), then renamed to the ``<ms>_<uuid>.<queue>.msg`` name kombu uses."""
        name = f"{int(round(monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        temporary = os.path.join(self.data_folder_out, f".{uuid.uuid4()}.tmp")
        try:
            with open(temporary, "wb") as handle:
                handle.write(str_to_bytes(dumps(payload)))
            os.replace(temporary, final)
        except OSError as exc:
            try:
                os.unlink(temporary)
            except OSError:
                pass
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc

    def _get(self, queue: str) -> Any:
        """Take the oldest message file of ``queue``. A file that is not a kombu message
        (not JSON, no properties, a body that does not decode) goes to the dead letters
        (``worker/dead_letters.py``: the folder ``dead`` beside the messages) as it was,
        and the next one is taken: kombu's own raised here and stopped the worker."""
        suffix = f"{queue}.msg"
        for filename in sorted(os.listdir(self.data_folder_in)):
            if filename.partition(".")[2] != suffix:
                continue
            path = os.path.join(self.data_folder_in, filename)
            taken = os.path.join(self.data_folder_in, f".{uuid.uuid4()}.taking")
            try:
                os.rename(path, taken)  # of two workers, one takes it
                with open(taken, "rb") as handle:
                    raw = handle.read()
                os.unlink(taken)
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise ChannelError(f"Cannot read file {path!r} from queue.") from exc
            try:
                payload = loads(bytes_to_str(raw))
                self.Message(payload, channel=self)  # what delivery builds: must not raise
            except Exception as exc:
                reason = f"not a kombu message ({type(exc).__name__}: {str(exc)[:200]})"
                dead_letters.for_channel(self).bury(queue, raw, reason)
                continue
            return payload
        raise filesystem.Empty()


class Transport(filesystem.Transport):
    Channel = Channel


class FileResultBackend(FilesystemBackend):
    def set(self, key: bytes, value: Any) -> None:
        final = self._filename(key)  # bytes, like the backend's path and separator
        temporary = final + f".{uuid.uuid4().hex}.tmp".encode()
        with self.open(temporary, "wb") as handle:
            handle.write(ensure_bytes(value))
        os.replace(temporary, final)


kombu_transport.TRANSPORT_ALIASES["filesystem"] = f"{__name__}:Transport"
celery_backends.BACKEND_ALIASES["file"] = f"{__name__}:FileResultBackend"
