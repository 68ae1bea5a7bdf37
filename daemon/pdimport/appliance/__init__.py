"""The appliance: drives, udev, the watch folder, systemd and the daemon that runs them."""
