"""Files copied into the images. Each runs inside a container with nothing of this package around it:
`entrypoint.py` (the serve entrypoint and health check, standard library only), `checkpoint.py` (its
preflight's checkpoint checks, standard library only, imported as a sibling) and `tinymodel.py` (the
cpu target's tiny MTP model generator, numpy only). The host side imports them too (tests, preflight
logic, the rule checker), but they must never import the rest of `dsv4_images`."""
