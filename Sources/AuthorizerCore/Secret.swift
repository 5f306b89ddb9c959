#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation

/// A secret from a file only its owner may read, or from the environment:
/// the one way the service takes keys (webhook signing secrets, the PAN index key).
public enum Secret {
    public struct Invalid: Error, CustomStringConvertible {
        public let description: String
        public init(_ description: String) { self.description = description }
    }

    /// The secret's bytes, trimmed; nil when neither `file` nor `variable` is given.
    /// A file readable by its group or others is refused; 16–512 bytes.
    public static func read(file: String?, variable: String?, environment: [String: String], what: String) throws -> [UInt8]? {
        var text: String?
        if let file {
            var info = stat()
            guard stat(file, &info) == 0 else { throw Invalid("\(what): cannot read \(file)") }
            guard info.st_mode & 0o077 == 0 else { throw Invalid("\(what): \(file) is readable by others (chmod 600 it)") }
            guard let data = FileManager.default.contents(atPath: file) else { throw Invalid("\(what): cannot read \(file)") }
            text = String(decoding: data, as: UTF8.self)
        } else if let variable {
            guard let value = environment[variable] else { throw Invalid("\(what): \(variable) is not set") }
            text = value
        }
        guard let secret = text?.trimmingCharacters(in: .whitespacesAndNewlines) else { return nil }
        guard (16...512).contains(secret.utf8.count) else { throw Invalid("\(what): 16-512 bytes") }
        return Array(secret.utf8)
    }
}
