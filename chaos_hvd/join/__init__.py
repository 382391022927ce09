"""The join handshake of ``chaos-hvdrun``: what a standby joiner, the running workers and the
launcher tell each other. Both sides import it: the workers' side (:mod:`chaos_hvd.state`:
``standby_join``, ``standby_feed``, ``adapter``) and the launcher's (:mod:`chaos_hvd.scaleout`).

``wire``        the signed, bounded messages and their scopes on Horovod's rendezvous server
                (pure).
``http``        a bounded HTTP client for those messages (Horovod's own client unpickles).
"""
