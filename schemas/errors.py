"""Error types that carry the pipeline stage, so dead letters and CLI messages can say where it broke."""
from __future__ import annotations


class StampflowError(Exception):
    """A user-facing error: the CLI prints ``str(err)`` on one line and exits with ``exit_code``, no traceback.

    2 means the user can fix it (path, config, broker address); 1 means the run failed after it started.
    """

    exit_code = 2


class ConfigError(StampflowError):
    """Bad configuration (unknown key, bad value, unreadable YAML)."""


class PacketError(Exception):
    """A single message could not be processed; it goes to the dead-letter sink, the worker carries on.

    ``stage`` names where it failed: read, decode, cutout, preprocess, classify, publish.
    """

    def __init__(self, stage: str, message: str):
        super().__init__(message)
        self.stage = stage


class DecodeError(PacketError):
    def __init__(self, message: str):
        super().__init__("decode", message)


class UnsupportedPacket(PacketError):
    """A packet we recognise but deliberately do not process (e.g. ZTF schema 1.3 with JPEG stamps)."""

    def __init__(self, message: str):
        super().__init__("decode", message)


class CutoutError(PacketError):
    def __init__(self, message: str):
        super().__init__("cutout", message)


class ErrorBudgetExceeded(StampflowError):
    """Too many consecutive packet failures: something systemic is wrong, so stop instead of dead-lettering everything."""

    exit_code = 1


class TransientError(StampflowError):
    """A dependency is unavailable (schema registry down, timeouts): not the packet's fault.

    It must not dead-letter the packet; the batch is left uncommitted and the worker stops with one line,
    so a restart (or the orchestrator's backoff) retries the same messages once the dependency is back.
    """

    exit_code = 1
