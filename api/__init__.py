"""The edge of leadcast: settings, the `leadcast` command line and (later) the Flask service."""
