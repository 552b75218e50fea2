"""The cluster on NATS JetStream (``serve --cluster``, ``chatcli cluster``).

``layout`` names every stream, subject, bucket and timing the nodes agree on; ``nodes``
is the node registry's record; ``options`` turns the NATS command-line options into
``nats.connect`` arguments; ``status`` is the ``chatcli cluster`` report.
"""
