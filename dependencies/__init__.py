"""Third-party model assets advface reads from installed registry packages (see manifest.json)."""
