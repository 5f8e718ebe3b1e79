"""zexec's own ZMTP transport: the broker's gateway (every port it binds) and the SDK's
connection to the broker, over TCP or TLS, with the codec of :mod:`zexec.core.zmtp`."""
