"""``medenc calibrate``: an eps grid measured on the user's data, with a recommendation."""
