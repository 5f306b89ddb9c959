import ArgumentParser

@main
struct AuthorizerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "authorizer",
        abstract: "A Redis-native benefits card authorizer.",
        subcommands: [
            Serve.self, RulesCommand.self, AccountCommand.self, CardCommand.self, ControlsCommand.self,
            Replay.self, StatementCommand.self, Audit.self,
            OrderCommand.self, Send.self, Bench.self, Top.self, WebhooksCommand.self,
        ]
    )
}
