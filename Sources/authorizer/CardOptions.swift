import ArgumentParser
import AuthorizerCore
import AuthorizerServer
import Foundation

/// The key that indexes PANs (and the previous one during a rotation): from
/// a file only the service user may read, or from the environment.
struct PANKeyOptions: ParsableArguments {
    @Option(help: "File with the PAN index key (HMAC-SHA256; 16-512 bytes; mode 600). Env AUTHORIZER_PAN_KEY otherwise.")
    var panKeyFile: String?
    @Option(help: "File with the previous PAN index key, during a rotation. Env AUTHORIZER_PAN_KEY_PREVIOUS otherwise.")
    var previousPanKeyFile: String?

    /// nil when no key is configured (then no PAN resolves to a card).
    func keys(environment: [String: String] = ProcessInfo.processInfo.environment) throws -> PANKeys? {
        do {
            let current = try Secret.read(
                file: panKeyFile, variable: panKeyFile == nil && environment["AUTHORIZER_PAN_KEY"] != nil ? "AUTHORIZER_PAN_KEY" : nil,
                environment: environment, what: "PAN index key"
            )
            let previous = try Secret.read(
                file: previousPanKeyFile,
                variable: previousPanKeyFile == nil && environment["AUTHORIZER_PAN_KEY_PREVIOUS"] != nil ? "AUTHORIZER_PAN_KEY_PREVIOUS" : nil,
                environment: environment, what: "previous PAN index key"
            )
            guard let current else {
                guard previous == nil else { throw ValidationError("a previous PAN key without a current one") }
                return nil
            }
            return PANKeys(current: current, previous: previous)
        } catch let error as Secret.Invalid {
            throw ValidationError(error.description)
        }
    }
}

/// The issuer's time zone: civil months for card expiry.
struct ZoneOptions: ParsableArguments {
    @Option(help: "The issuer's time zone (an IANA name, or UTC+HH:MM). Env AUTHORIZER_TIME_ZONE; default America/Sao_Paulo.")
    var timeZone: String?

    func zone(environment: [String: String] = ProcessInfo.processInfo.environment) throws -> TimeZone {
        let name = timeZone ?? environment["AUTHORIZER_TIME_ZONE"] ?? "America/Sao_Paulo"
        if let zone = Self.fixedOffset(name) ?? TimeZone(identifier: name) { return zone }
        throw ValidationError("unknown time zone \(name) (an IANA name such as America/Sao_Paulo, or UTC-03:00)")
    }

    /// `UTC+HH:MM`, `UTC-HH:MM` (optionally `:SS`).
    static func fixedOffset(_ name: String) -> TimeZone? {
        guard name.hasPrefix("UTC+") || name.hasPrefix("UTC-") else { return nil }
        let sign = name.hasPrefix("UTC-") ? -1 : 1
        let parts = name.dropFirst(4).split(separator: ":", omittingEmptySubsequences: false).map { Int($0) }
        guard (2...3).contains(parts.count), parts.allSatisfy({ $0 != nil }) else { return nil }
        let hours = parts[0]!, minutes = parts[1]!, seconds = parts.count == 3 ? parts[2]! : 0
        guard hours <= 14, minutes < 60, seconds < 60 else { return nil }
        return TimeZone(secondsFromGMT: sign * (hours * 3600 + minutes * 60 + seconds))
    }
}
