import ArgumentParser
import AuthorizerCore
import Foundation
import Logging

/// `--log-format`.
enum LogFormat: String, CaseIterable, ExpressibleByArgument {
    case text
    case json
}

/// Writes each event to stderr as one JSON object on one line:
///
///     {"ts":"2025-01-31T12:00:00.123Z","level":"warning","label":"authorizer","msg":"declined","account":"123","id":"9f2c","reason":"unknown account"}
///
/// Metadata keys become top-level fields (a key that collides with `ts`,
/// `level`, `label`, `msg` or `error` gets a `meta_` prefix); nested
/// metadata becomes JSON objects and arrays.
struct JSONLogHandler: LogHandler {
    let label: String
    var logLevel: Logger.Level = .info
    var metadata: Logger.Metadata = [:]
    var metadataProvider: Logger.MetadataProvider?

    private static let reserved: Set<String> = ["ts", "level", "label", "msg", "error"]
    /// Lines from many threads must not interleave.
    private static let lock = NSLock()

    init(label: String, metadataProvider: Logger.MetadataProvider? = LoggingSystem.metadataProvider) {
        self.label = label
        self.metadataProvider = metadataProvider
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var fields = metadata
        if let provided = metadataProvider?.get() { fields.merge(provided) { $1 } }
        if let own = event.metadata { fields.merge(own) { $1 } }

        var line = "{"
        Self.appendField("ts", .string(Self.timestamp()), to: &line, first: true)
        Self.appendField("level", .string(event.level.rawValue), to: &line)
        Self.appendField("label", .string(label), to: &line)
        Self.appendField("msg", .string(event.message.description), to: &line)
        if let error = event.error {
            Self.appendField("error", .string("\(error)"), to: &line)
        }
        for (key, value) in fields.sorted(by: { $0.key < $1.key }) {
            Self.appendField(Self.reserved.contains(key) ? "meta_\(key)" : key, value, to: &line)
        }
        line += "}\n"
        Self.emit(line)
    }

    private static func appendField(_ key: String, _ value: Logger.Metadata.Value, to line: inout String, first: Bool = false) {
        if !first { line += "," }
        appendString(key, to: &line)
        line += ":"
        appendValue(value, to: &line)
    }

    private static func appendValue(_ value: Logger.Metadata.Value, to line: inout String) {
        switch value {
        case .string(let text):
            appendString(text, to: &line)
        case .stringConvertible(let convertible):
            appendString(convertible.description, to: &line)
        case .array(let values):
            line += "["
            for (index, element) in values.enumerated() {
                if index > 0 { line += "," }
                appendValue(element, to: &line)
            }
            line += "]"
        case .dictionary(let dictionary):
            line += "{"
            for (index, (key, element)) in dictionary.sorted(by: { $0.key < $1.key }).enumerated() {
                if index > 0 { line += "," }
                appendString(key, to: &line)
                line += ":"
                appendValue(element, to: &line)
            }
            line += "}"
        }
    }

    /// A JSON string literal: quotes, backslashes and control characters escaped.
    static func appendString(_ text: String, to line: inout String) {
        line += JSONText.quoted(text)
    }

    /// UTC, millisecond precision: `2025-01-31T12:00:00.123Z`.
    static func timestamp() -> String {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return UTCTimestamp.iso8601(milliseconds: Int64(now.tv_sec) * 1_000 + Int64(now.tv_nsec / 1_000_000))
    }

    private static func emit(_ line: String) {
        let bytes = Array(line.utf8)
        lock.lock()
        defer { lock.unlock() }
        var offset = 0
        while offset < bytes.count {
            let written = bytes[offset...].withUnsafeBytes { write(STDERR_FILENO, $0.baseAddress, $0.count) }
            if written < 0 && errno == EINTR { continue }
            guard written > 0 else { return }
            offset += written
        }
    }
}
