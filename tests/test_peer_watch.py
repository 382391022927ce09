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
