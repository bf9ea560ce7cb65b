"""The project's own protocol errors: every parser raises these and nothing else."""


class ProtocolError(Exception):
    """Input from Asterisk (AMI or FastAGI) that does not follow the protocol."""


class AmiProtocolError(ProtocolError):
    """A malformed AMI frame or banner."""


class AgiProtocolError(ProtocolError):
    """A malformed FastAGI header block or reply line."""


class UnsafeValue(ValueError):
    """A value bound for AMI or AGI carries CR, LF or NUL (header or command injection)."""
