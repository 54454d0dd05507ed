"""The one error type callers see: a cause and a fix, never a traceback."""


class FlightError(Exception):
    def __init__(self, kind: str, message: str, **extra):
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.extra = extra

    def __str__(self) -> str:
        return self.message
