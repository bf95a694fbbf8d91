"""The container description dsv4_images.serving hands to Docker (the integration tests start real ones)."""

from dsv4_images import serving


def test_a_host_address_and_port_are_bound_as_given():
    """`dsv4-images demo` binds 127.0.0.1:PORT; testcontainers' with_bind_ports refuses an (address, port) pair."""
    c = serving.container("dsv4-flash-test:cpu", host_port=("127.0.0.1", 8123))
    assert c.ports == {str(serving.PORT): ("127.0.0.1", 8123)}


def test_a_bare_host_port_and_no_port_at_all():
    assert serving.container("x", host_port=8123).ports == {str(serving.PORT): 8123}
    assert serving.container("x").ports == {str(serving.PORT): None}  # Docker picks a free port


def test_a_server_bound_to_an_address_is_waited_on_and_reached_there():
    """testcontainers may name Docker's gateway (172.17.0.1) as the host, where a port bound to 127.0.0.1
    does not answer: the demo then waited its whole timeout on a healthy server."""
    c = serving.container("x", host_port=("127.0.0.1", 8123))
    assert serving.address(c) == ("127.0.0.1", 8123)
    assert serving.ServingWait()._build_url(c) == "http://127.0.0.1:8123/health"
