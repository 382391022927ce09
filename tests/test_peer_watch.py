"""The crash watch's abort touches only sockets that no Python object owns (Gloo's are C++)."""

import socket

from chaos_hvd.state.peer_watch import abort_gloo_sockets, established_tcp, python_socket_fds


def _pair():
    srv = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(srv.getsockname())
    server_side, _ = srv.accept()
    srv.close()
    return client, server_side


def test_abort_spares_python_owned_connections_and_cuts_foreign_ones():
    user, user_peer = _pair()              # e.g. a data loader's connection: a Python socket
    foreign, foreign_peer = _pair()
    fd = foreign.detach()                  # now only the descriptor is left, as with Gloo's
    assert fd not in python_socket_fds() and user.fileno() in python_socket_fds()
    assert any(f == fd for f, _, _ in established_tcp())
    n = abort_gloo_sockets(set(), set())
    assert n >= 1
    foreign_peer.settimeout(5)
    assert foreign_peer.recv(1) == b""     # the peer of the cut connection sees EOF
    user.sendall(b"x")                      # the user's connection still works both ways
    assert user_peer.recv(1) == b"x"
    user_peer.sendall(b"y")
    assert user.recv(1) == b"y"
    for s in (user, user_peer, foreign_peer):
        s.close()
    socket.socket(fileno=fd).close()


def test_a_host_that_leaves_the_agents_view_silently_is_dead(tmp_path):
    """Silent loss: the peer's sockets never close, but its agent stops being heard."""
    import time

    import torch

    from chaos_hvd.cluster.client import agreed_members
    from chaos_hvd.state.peer_watch import PeerWatch
    from chaos_hvd.state.transfer import Peer, ShardServer, new_token
    from harness.local_cluster import LocalCluster

    fast = ["--heartbeat", "0.05", "--lease", "0.2", "--suspect", "0.6", "--propose-timeout",
            "0.15", "--retry", "0.1", "--ping", "0.1", "--probe-seconds", "0"]
    with LocalCluster(str(tmp_path), 4, fast) as c:   # a majority must remain after both losses
        c.wait_members(c.ids, set(c.ids))
        me, quiet, polite, other = c.ids
        servers, peers = [], []
        for i in (1, 2):                                    # peers' shard servers stay up
            srv, token = ShardServer("127.0.0.1"), new_token()
            srv.publish(1, b"{}", memoryview(torch.zeros(8, dtype=torch.uint8).numpy()), token)
            servers.append(srv)
            peers.append(Peer(i, "127.0.0.1", srv.port, token))
        dead = []
        watch = PeerWatch(dead.append)
        watch.arm(peers, 1, hosts={1: quiet, 2: polite},
                  members=lambda: agreed_members(c.socket(me)), poll_s=0.05)
        c.wait(lambda: all(srv.watchers for srv in servers), 5, "watch connections")
        servers[1].farewell()                               # rank 2 leaves on purpose ...
        c.kill(polite)                                      # ... and its host goes
        c.wait_members([me, quiet, other], {me, quiet, other}, 10)
        time.sleep(0.3)
        assert dead == []                                   # a goodbye is no crash
        killed_at = time.time()
        c.kill(quiet)                                       # rank 1's host vanishes silently
        c.wait(lambda: dead, 10, "the watch to fire")
        assert dead == [1]
        assert time.time() - killed_at < 0.6 + 1 + 1.5     # detection (suspect) + 1 s + slack
        watch.disarm()
        for srv in servers:
            srv.close()


def test_after_an_abort_the_watch_aborts_again_until_disarmed():
    """A connection the first abort did not list must not leave the collective waiting for
    Gloo's timeout: the watch repeats the abort while its owner has not begun a reset."""
    import threading
    import time

    from chaos_hvd.state import peer_watch, transfer
    from chaos_hvd.state.peer_watch import PeerWatch

    srv = socket.create_server(("127.0.0.1", 0))

    def peer_that_dies():                          # answers the watch, then its kernel closes
        conn, _ = srv.accept()
        transfer.recv_frame(conn)
        transfer.send_frame(conn, {"ok": True})
        time.sleep(0.3)
        conn.close()                               # no goodbye: a crash

    threading.Thread(target=peer_that_dies, daemon=True).start()
    dead, again = [], []
    watch = PeerWatch(dead.append, lambda: again.append(time.monotonic()))
    watch.arm([transfer.Peer(1, "127.0.0.1", srv.getsockname()[1], transfer.new_token())], 1)
    deadline = time.monotonic() + 5
    while not dead and time.monotonic() < deadline:
        time.sleep(0.02)
    assert dead == [1]
    time.sleep(peer_watch.REPEAT_EVERY_S * 3.5)
    assert len(again) >= 2                         # repeated while nobody reset
    watch.disarm()                                 # the reset begins: never again after this
    n = len(again)
    time.sleep(peer_watch.REPEAT_EVERY_S * 3)
    assert len(again) == n
    srv.close()


def test_stack_dumps_for_a_collective_that_outlives_the_abort(monkeypatch):
    import shutil
    import threading

    import pytest

    from chaos_hvd.state.peer_watch import native_stacks, thread_stacks
    release = threading.Event()
    waiter = threading.Thread(target=release.wait, name="blocked-here", daemon=True)
    waiter.start()
    try:
        py = thread_stacks()
        assert "--- thread blocked-here" in py and "in wait" in py
        monkeypatch.delenv("CHAOS_NATIVE_STACKS", raising=False)
        assert native_stacks() is None                  # off unless asked for
        if shutil.which("gdb") is None:
            pytest.skip("gdb is not installed: native stacks cannot be taken")
        monkeypatch.setenv("CHAOS_NATIVE_STACKS", "1")
        native = native_stacks()
        assert native and native.count("Thread ") >= 2 and "#0 " in native
    finally:
        release.set()


def test_a_peer_gone_before_its_watch_connects_is_dead():
    """Killed between the sync that named it and the watch: its port refuses, which is a crash
    (its shard server lives as long as it does), not a watch that could not be set up."""
    import time

    from chaos_hvd.state import transfer
    from chaos_hvd.state.peer_watch import PeerWatch

    gone = socket.create_server(("127.0.0.1", 0))
    port = gone.getsockname()[1]
    gone.close()                                   # nothing listens there now
    dead = []
    watch = PeerWatch(dead.append)
    watch.arm([transfer.Peer(4, "127.0.0.1", port, transfer.new_token())], 1)
    deadline = time.monotonic() + 5
    while not dead and time.monotonic() < deadline:
        time.sleep(0.02)
    watch.disarm()
    assert dead == [4]


def test_disarm_ends_the_watch_connections_and_threads():
    """close() from another thread neither wakes a recv() blocked on the socket nor ends the
    connection: without the shutdown every reset would leave one thread here and one
    connection at each peer's shard server until that peer exits."""
    import threading
    import time

    from chaos_hvd.state.peer_watch import PeerWatch
    from chaos_hvd.state.transfer import Peer, ShardServer, new_token

    srv, token = ShardServer("127.0.0.1"), new_token()
    srv.publish(1, b"{}", memoryview(bytearray(8)), token)
    dead = []
    watch = PeerWatch(dead.append)
    for _ in range(3):                                  # three armed periods, as three resets
        watch.arm([Peer(1, "127.0.0.1", srv.port, token)], 1)
        deadline = time.monotonic() + 5
        while srv.watchers != 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert srv.watchers == 1
        watch.disarm()
        deadline = time.monotonic() + 5
        while srv.watchers and time.monotonic() < deadline:
            time.sleep(0.01)
        assert srv.watchers == 0                        # the server saw the connection end
    deadline = time.monotonic() + 5
    while (any(t.name == "chaos-watch-1" for t in threading.enumerate())
           and time.monotonic() < deadline):
        time.sleep(0.01)
    assert not any(t.name == "chaos-watch-1" for t in threading.enumerate())
    assert dead == []                                   # a disarmed watch never fires
    srv.close()


def test_describe_says_what_each_watch_saw():
    """A collective that fails without the watch's abort logs this: per peer, whether its watch
    was set up, when it ended and how, and whom the period fired for."""
    import time

    from chaos_hvd.state.peer_watch import PeerWatch
    from chaos_hvd.state.transfer import Peer, ShardServer, new_token

    live, token = ShardServer("127.0.0.1"), new_token()
    live.publish(1, b"{}", memoryview(bytearray(8)), token)
    gone = socket.create_server(("127.0.0.1", 0))
    port = gone.getsockname()[1]
    gone.close()
    dead = []
    watch = PeerWatch(dead.append)
    assert not watch.fired
    watch.arm([Peer(1, "127.0.0.1", live.port, token)], 1)
    deadline = time.monotonic() + 5
    while not live.watchers and time.monotonic() < deadline:
        time.sleep(0.01)
    text = watch.describe()
    assert not watch.fired and "fired for nobody; rank 1: watching since +" in text, text
    watch.arm([Peer(2, "127.0.0.1", port, token)], 1)      # the next period: a peer gone
    deadline = time.monotonic() + 5
    while not dead and time.monotonic() < deadline:
        time.sleep(0.01)
    text = watch.describe()
    assert watch.fired and dead == [2], text
    assert "fired for rank 2; rank 2: gone before set up" in text, text
    watch.disarm()
    assert "fired for rank 2" in watch.describe()       # the period's story outlives the disarm
    live.close()
