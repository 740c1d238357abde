"""Imported first by every entry point that loads TensorFlow: filters its start-up chatter
from stderr for the rest of the process (see ``movierec.core.quiet``)."""

from movierec.core.quiet import install

install()
