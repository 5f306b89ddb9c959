// The load generator lives here.
