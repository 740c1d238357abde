"""The project's own errors: each one is shown to the user as a single line."""


class MovieRecError(Exception):
    """Base class: bad input, bad params or a failed check, reported without a traceback."""


class ParamsError(MovieRecError, ValueError):
    """A params.yaml key is unknown, of the wrong type or out of range."""


class DataError(MovieRecError, ValueError):
    """A ratings or movies file does not have the expected layout or values."""
