import AuthorizerCore
import Crypto
import Foundation
import Yams

/// `webhooks.yaml`: where events go, which ones, and how long they are retried.
///
/// ```yaml
/// endpoints:
///   - name: app-backend
///     url: https://hooks.example.com/authorizer
///     secret_file: /etc/authorizer/webhook-app-backend.secret   # or secret_env: NAME
///     previous_secret_file: /etc/authorizer/webhook-old.secret  # during a rotation (or previous_secret_env)
///     events: [authorization.approved, authorization.declined, reversal, credit]  # default: all
///     accounts: [acc-1, acc-2]                                   # default: all
///     max_in_flight: 32      # accounts delivered at once
///     timeout_ms: 5000
/// retry:
///   first_ms: 1000           # the first retry after about this long, doubling
///   max_ms: 3600000          # never more than this between attempts
///   max_age_seconds: 259200  # then the event is a dead letter (72 h)
/// store:
///   max_events: 1000000      # events awaiting delivery, every endpoint together
/// ```
///
/// Secrets never appear in the file: they are read from the environment or
/// from a file only the service user may read (mode 0600 or 0400).
public struct WebhookConfiguration: Sendable {
    public struct Endpoint: Sendable {
        public let name: String
        public let url: String
        /// The current secret first, then the previous one during a rotation
        /// (bytes: `SymmetricKey` is not `Sendable`).
        public let secrets: [[UInt8]]

        public var keys: [SymmetricKey] { secrets.map { SymmetricKey(data: $0) } }
        /// nil: every kind.
        public let events: Set<WebhookEvent.Kind>?
        /// nil: every account.
        public let accounts: Set<String>?
        public let maxInFlight: Int
        public let timeoutMilliseconds: Int

        public func wants(_ event: WebhookEvent) -> Bool {
            (events?.contains(event.kind) ?? true) && (accounts?.contains(event.account) ?? true)
        }
    }

    public struct Retry: Sendable, Equatable {
        public var firstMilliseconds: Int64 = 1_000
        public var maxMilliseconds: Int64 = 3_600_000
        public var maxAgeSeconds: Int64 = 72 * 3_600

        public init() {}
    }

    public let endpoints: [Endpoint]
    public let retry: Retry
    /// The retry store's cap: events awaiting delivery, every endpoint together.
    public let maxStoredEvents: Int

    public static let maxEndpoints = 16
    public static let nameCharacters = Set("abcdefghijklmnopqrstuvwxyz0123456789-_")

    public struct Invalid: Error, CustomStringConvertible {
        public let description: String
        init(_ description: String) { self.description = description }
    }

    /// Reads and checks the file; `environment` supplies `secret_env` values.
    public init(path: String, environment: [String: String] = ProcessInfo.processInfo.environment) throws {
        guard let text = FileManager.default.contents(atPath: path).map({ String(decoding: $0, as: UTF8.self) }) else {
            throw Invalid("cannot read \(path)")
        }
        try self.init(yaml: text, environment: environment)
    }

    public init(yaml: String, environment: [String: String]) throws {
        let file: File
        do {
            file = try YAMLDecoder().decode(File.self, from: yaml)
        } catch {
            throw Invalid("webhooks configuration: \(error)")
        }
        try Self.checkKeys(yaml)
        guard !file.endpoints.isEmpty, file.endpoints.count <= Self.maxEndpoints else {
            throw Invalid("webhooks configuration: 1-\(Self.maxEndpoints) endpoints")
        }
        endpoints = try file.endpoints.map { try Self.endpoint($0, environment: environment) }
        guard Set(endpoints.map(\.name)).count == endpoints.count else { throw Invalid("endpoint names must be unique") }
        var retry = Retry()
        if let first = file.retry?.first_ms { retry.firstMilliseconds = first }
        if let max = file.retry?.max_ms { retry.maxMilliseconds = max }
        if let age = file.retry?.max_age_seconds { retry.maxAgeSeconds = age }
        guard (10...3_600_000).contains(retry.firstMilliseconds), (retry.firstMilliseconds...86_400_000).contains(retry.maxMilliseconds) else {
            throw Invalid("retry: first_ms must be 10-3600000 and max_ms from first_ms to 86400000")
        }
        guard (1...30 * 86_400).contains(retry.maxAgeSeconds) else { throw Invalid("retry: max_age_seconds must be 1-2592000 (30 days)") }
        self.retry = retry
        maxStoredEvents = file.store?.max_events ?? 1_000_000
        guard (1...100_000_000).contains(maxStoredEvents) else { throw Invalid("store: max_events must be 1-100000000") }
    }

    private static func endpoint(_ raw: File.Endpoint, environment: [String: String]) throws -> Endpoint {
        guard (1...64).contains(raw.name.count), raw.name.allSatisfy(nameCharacters.contains) else {
            throw Invalid("endpoint name \"\(raw.name)\": 1-64 of a-z 0-9 - _")
        }
        guard let url = URL(string: raw.url), ["http", "https"].contains(url.scheme ?? ""), url.host != nil, raw.url.utf8.count <= 2_048 else {
            throw Invalid("endpoint \(raw.name): url must be http(s)://host/…")
        }
        guard let current = try secret(file: raw.secret_file, variable: raw.secret_env, environment: environment, what: "endpoint \(raw.name): secret") else {
            throw Invalid("endpoint \(raw.name): secret_file or secret_env is required")
        }
        let previous = try secret(file: raw.previous_secret_file, variable: raw.previous_secret_env, environment: environment, what: "endpoint \(raw.name): previous secret")
        let events = try raw.events.map { names in
            try Set(names.map { name in
                guard let kind = WebhookEvent.Kind(rawValue: name) else {
                    throw Invalid("endpoint \(raw.name): unknown event type \(name) (\(WebhookEvent.Kind.allCases.map(\.rawValue).joined(separator: ", ")))")
                }
                return kind
            })
        }
        let maxInFlight = raw.max_in_flight ?? 32
        let timeout = raw.timeout_ms ?? 5_000
        guard (1...1_024).contains(maxInFlight) else { throw Invalid("endpoint \(raw.name): max_in_flight must be 1-1024") }
        guard (100...60_000).contains(timeout) else { throw Invalid("endpoint \(raw.name): timeout_ms must be 100-60000") }
        return Endpoint(
            name: raw.name, url: raw.url, secrets: [current] + (previous.map { [$0] } ?? []),
            events: events, accounts: raw.accounts.map(Set.init), maxInFlight: maxInFlight, timeoutMilliseconds: timeout
        )
    }

    /// A secret from a file only its owner may read, or from the environment.
    private static func secret(file: String?, variable: String?, environment: [String: String], what: String) throws -> [UInt8]? {
        do {
            return try Secret.read(file: file, variable: variable, environment: environment, what: what)
        } catch let error as Secret.Invalid {
            throw Invalid(error.description)
        }
    }

    /// A misspelt key would silently keep its default: every key must be known.
    private static func checkKeys(_ yaml: String) throws {
        guard let root = try Yams.load(yaml: yaml) as? [String: Any] else { throw Invalid("webhooks configuration: not a mapping") }
        try known(root, ["endpoints", "retry", "store"], at: "")
        for endpoint in root["endpoints"] as? [Any] ?? [] {
            try known(endpoint as? [String: Any] ?? [:], [
                "name", "url", "secret_file", "secret_env", "previous_secret_file", "previous_secret_env",
                "events", "accounts", "max_in_flight", "timeout_ms",
            ], at: "endpoints: ")
        }
        try known(root["retry"] as? [String: Any] ?? [:], ["first_ms", "max_ms", "max_age_seconds"], at: "retry: ")
        try known(root["store"] as? [String: Any] ?? [:], ["max_events"], at: "store: ")
    }

    private static func known(_ mapping: [String: Any], _ keys: Set<String>, at place: String) throws {
        if let unknown = mapping.keys.sorted().first(where: { !keys.contains($0) }) {
            throw Invalid("webhooks configuration: \(place)unknown key \(unknown) (known: \(keys.sorted().joined(separator: ", ")))")
        }
    }

    /// The file as written.
    struct File: Decodable {
        struct Endpoint: Decodable {
            let name: String
            let url: String
            let secret_file: String?
            let secret_env: String?
            let previous_secret_file: String?
            let previous_secret_env: String?
            let events: [String]?
            let accounts: [String]?
            let max_in_flight: Int?
            let timeout_ms: Int?
        }
        struct RetryPart: Decodable {
            let first_ms: Int64?
            let max_ms: Int64?
            let max_age_seconds: Int64?
        }
        struct Store: Decodable {
            let max_events: Int?
        }
        let endpoints: [Endpoint]
        let retry: RetryPart?
        let store: Store?
    }
}
