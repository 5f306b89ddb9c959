import ArgumentParser

struct Replay: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Drain the statements stream into SQLite (exactly once).")
    func run() throws { throw fail("not built yet") }
}

struct StatementCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "statement", abstract: "Print an account's statement from SQLite.")
    func run() throws { throw fail("not built yet") }
}

struct Audit: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Recompute balances from the replayed statements and compare with Redis.")
    func run() throws { throw fail("not built yet") }
}
