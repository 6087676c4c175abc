"""The messaging settings model that every layer reads: the field schema, values and their parsing,
the resolution default → saved → environment, the effective snapshot (cached per version), the saved
state, the rules between fields, each protocol's identity and the protocol chosen for a service.
Below checks/, delivery/ and the settings page; it imports nothing above it."""
