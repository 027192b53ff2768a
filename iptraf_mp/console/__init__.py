"""iptraf-mp console: the terminal monitor."""
