"""HTTP: the webhook and admin endpoints (ASGI), served by hypercorn's Trio worker."""
