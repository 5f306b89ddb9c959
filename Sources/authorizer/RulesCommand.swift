import ArgumentParser
import AuthorizerCore
import AuthorizerServer
import Foundation

struct RulesCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rules",
        abstract: "Show or change the category rules in Redis.",
        subcommands: [Load.self, Show.self, Init.self]
    )

    struct Load: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Replace the rules with those of a JSON or YAML file.")
        @OptionGroup var redisOptions: RedisOptions
        @Argument(help: "Rules file (.json, .yaml or .yml).") var file: String

        func run() async throws {
            let text = try readTextFile(file)
            let rules: Rules
            do {
                rules = try RulesFile.parse(text, fileName: file)
            } catch {
                throw fail("\(file): \(error)")
            }
            let redis = try await RedisSession.open(redisOptions)
            defer { redis.close() }
            try await redis.rulesStore.save(rules).get()
            print("loaded \(rules.mccCategories.count) mcc rules and \(rules.merchantMCCs.count) merchant rules; fallback \(rules.fallbackCategory) (\(rules.fallbackMode.rawValue))"
                + (rules.programControls.values.isEmpty ? "" : "; program controls \(rules.programControls.argument)"))
        }
    }

    struct Init: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Install the default rules when Redis holds none.")
        @OptionGroup var redisOptions: RedisOptions

        func run() async throws {
            let redis = try await RedisSession.open(redisOptions)
            defer { redis.close() }
            let installed = try await redis.rulesStore.installDefaultsIfMissing().get()
            print(installed ? "installed the default rules" : "rules already present; left unchanged")
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print the rules in Redis (as a YAML rules file).")
        @OptionGroup var redisOptions: RedisOptions

        func run() async throws {
            let redis = try await RedisSession.open(redisOptions)
            defer { redis.close() }
            let rules = try await redis.rulesStore.load().get()
            print("mcc:")
            for (mcc, category) in rules.mccCategories.sorted(by: { $0.key < $1.key }) {
                print("  \"\(mcc)\": \(category)")
            }
            print("merchants:")
            for (merchant, mcc) in rules.merchantMCCs.sorted(by: { $0.key < $1.key }) {
                print("  \"\(merchant)\": \"\(mcc)\"")
            }
            print("fallback: \(rules.fallbackCategory)")
            print("fallback_mode: \(rules.fallbackMode.rawValue)")
            let controls = rules.programControls.values
            guard !controls.isEmpty else { return }
            print("controls:")
            for kind in ControlKind.allCases {
                guard let value = controls[kind] else { continue }
                switch kind {
                case .perTransaction, .dayAmount, .weekAmount, .monthAmount, .rollingAmount:
                    print("  \(kind.rawValue): \"\(Int64(value).map { Cents($0).description } ?? value)\"")
                case .dayCount, .weekCount, .monthCount, .rollingCount, .rollingSeconds:
                    print("  \(kind.rawValue): \(value)")
                case .blockedMCC:
                    print("  \(kind.rawValue): [\(value.split(separator: ",").map { "\"\($0)\"" }.joined(separator: ", "))]")
                case .blockedMerchant:
                    // Only the descriptors' digests are stored; a file loaded back needs the descriptors.
                    print("  # \(kind.rawValue): the digests \(value) (the rules file names the descriptors)")
                }
            }
        }
    }
}
