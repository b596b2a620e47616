"""Run the collector as a service of the host's service manager (systemd: `service.systemd`)."""
