"""Settings → Messaging: the stored broker settings, how they resolve with the environment
(`effective`), how they change (`service` → the change pipeline `changes`), and the page (`views`)."""
