import ArgumentParser

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Load generator over the terminal protocol.")
    func run() throws { throw fail("not built yet") }
}
