"""Configuration delivery: what each extension service gets from the console (its document), the
outbox of callbacks that tell it a new version exists, and the roll-out state it reports back."""
