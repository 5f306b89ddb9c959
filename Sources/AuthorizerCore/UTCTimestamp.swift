#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// `2026-12-07T15:04:05.123Z`: UTC with milliseconds, from the C library's
/// calendar (no formatter object: logs and webhook events write one per line).
public enum UTCTimestamp {
    public static func iso8601(milliseconds: Int64) -> String {
        precondition(milliseconds >= 0, "a time after the epoch")
        var seconds = time_t(milliseconds / 1_000)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        func pad(_ value: Int32, _ width: Int) -> String {
            let digits = String(value)
            return String(repeating: "0", count: max(0, width - digits.count)) + digits
        }
        return "\(pad(parts.tm_year + 1_900, 4))-\(pad(parts.tm_mon + 1, 2))-\(pad(parts.tm_mday, 2))T"
            + "\(pad(parts.tm_hour, 2)):\(pad(parts.tm_min, 2)):\(pad(parts.tm_sec, 2)).\(pad(Int32(milliseconds % 1_000), 3))Z"
    }
}
