#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

#if canImport(Glibc)
private let systemRead = Glibc.read
#else
private let systemRead = Darwin.read
#endif

/// CPU time a process has used so far, from Linux's `/proc/PID/stat`:
/// utime + stime (fields 14 and 15), in clock ticks of `ticksPerSecond`
/// (usually 100, so a reading is truncated to 10 ms).
public struct ProcessCPU: Sendable, Equatable {
    public var userTicks: UInt64
    public var systemTicks: UInt64

    public init(userTicks: UInt64, systemTicks: UInt64) {
        self.userTicks = userTicks
        self.systemTicks = systemTicks
    }

    public var ticks: UInt64 { userTicks + systemTicks }

    public static let ticksPerSecond: Int = {
        let value = sysconf(Int32(_SC_CLK_TCK))
        return value > 0 ? value : 100
    }()

    /// The process `pid` (0: this process); nil when it is gone or /proc is absent.
    public static func read(pid: Int32) -> ProcessCPU? {
        let path = pid == 0 ? "/proc/self/stat" : "/proc/\(pid)/stat"
        guard let text = readSmallFile(path) else { return nil }
        return parse(stat: text)
    }

    /// The stat line: `pid (comm) state ppid …`. comm may hold spaces and
    /// parentheses, so the fields are counted from the last ')'.
    public static func parse(stat: String) -> ProcessCPU? {
        guard let close = stat.lastIndex(of: ")") else { return nil }
        // After ')': field 3 (state) is index 0, so utime (14) is 11 and stime (15) is 12.
        let fields = stat[stat.index(after: close)...].split(separator: " ", omittingEmptySubsequences: true)
        guard fields.count > 12, let user = UInt64(fields[11]), let system = UInt64(fields[12]) else { return nil }
        return ProcessCPU(userTicks: user, systemTicks: system)
    }

    /// /proc files report a size of 0, so read until end of file; a stat line is far below the limit.
    private static func readSmallFile(_ path: String, limit: Int = 4_096) -> String? {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes = [UInt8](repeating: 0, count: limit)
        var length = 0
        while length < limit {
            let count = bytes.withUnsafeMutableBytes { buffer in
                systemRead(fd, buffer.baseAddress! + length, limit - length)
            }
            if count <= 0 { break }
            length += count
        }
        return length > 0 ? String(decoding: bytes[..<length], as: UTF8.self) : nil
    }
}

/// CPU of named groups of processes over one bench phase: sampled at its
/// start and end. A group is one or more pids (e.g. the masters of a cluster).
public struct CPUMeter: Sendable {
    public struct Group: Sendable {
        public var name: String
        public var pids: [Int32]
        public init(name: String, pids: [Int32]) {
            self.name = name
            self.pids = pids
        }
    }

    public let groups: [Group]
    private var start: [UInt64] = []

    public init(groups: [Group]) {
        self.groups = groups
    }

    /// Ticks of each group now; a process that is gone counts as nil.
    private func sample() -> [UInt64?] {
        groups.map { group in
            var total: UInt64 = 0
            for pid in group.pids {
                guard let cpu = ProcessCPU.read(pid: pid) else { return nil }
                total += cpu.ticks
            }
            return total
        }
    }

    public mutating func begin() {
        start = sample().map { $0 ?? 0 }
    }

    /// Ticks used by each group since `begin()`; nil for a group whose process vanished.
    public func end() -> [String: CPUCost] {
        var costs: [String: CPUCost] = [:]
        for (index, ticks) in sample().enumerated() {
            guard let ticks, index < start.count, ticks >= start[index] else { continue }
            costs[groups[index].name] = CPUCost(ticks: ticks - start[index], processes: groups[index].pids.count)
        }
        return costs
    }
}

/// CPU ticks one group used over a phase, and what that is per request.
public struct CPUCost: Sendable, Equatable {
    public var ticks: UInt64
    public var processes: Int

    public init(ticks: UInt64, processes: Int) {
        self.ticks = ticks
        self.processes = processes
    }

    public var seconds: Double { Double(ticks) / Double(ProcessCPU.ticksPerSecond) }

    /// Microseconds of CPU per answered request.
    public func microsecondsPerRequest(_ requests: Int) -> Double {
        requests > 0 ? seconds * 1e6 / Double(requests) : 0
    }

    /// Each pid's reading is truncated to a tick at both ends, so the
    /// difference is off by up to one tick per process.
    public func resolutionPerRequest(_ requests: Int) -> Double {
        requests > 0 ? Double(processes) * 1e6 / Double(ProcessCPU.ticksPerSecond) / Double(requests) : 0
    }

    /// Below 100 ticks a process's one-tick truncation is over 1 % of the number.
    public var isCoarse: Bool { ticks < 100 * UInt64(processes) }
}
