// Statements replay lives here.
