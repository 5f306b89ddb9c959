import LoadGenerator

/// What one bench phase costs per answered request: CPU of each measured
/// process group and, with --memory, Redis memory left behind.
struct BenchCost: Encodable {
    /// µs of CPU per answered request by group, and `total` (their sum).
    var cpuMicrosecondsPerAuth: [String: Double]?
    /// CPU seconds by group over the phase (the numerator of the above).
    var cpuSeconds: [String: Double]?
    /// How far each µs figure may be off: one clock tick per process, per request.
    var cpuResolutionMicroseconds: [String: Double]?
    /// Groups that used fewer than 100 ticks per process: their number is rounded by over 1 %.
    var cpuCoarse: [String]?
    var cpuTicksPerSecond: Int?
    /// Bytes of Redis memory per answered request: `idempotency` (everything
    /// but the statement streams), `stream`, and `total` (their sum);
    /// `stream_new_keys`: the part of `stream` that is streams the phase created.
    var memoryBytesPerAuth: [String: Double]?
    var memory: RedisMemoryProbe.Reading?

    enum CodingKeys: String, CodingKey {
        case cpuMicrosecondsPerAuth = "cpu_us_per_auth", cpuSeconds = "cpu_seconds"
        case cpuResolutionMicroseconds = "cpu_resolution_us", cpuCoarse = "cpu_coarse", cpuTicksPerSecond = "cpu_ticks_per_s"
        case memoryBytesPerAuth = "memory_bytes_per_auth", memory
    }

    init(answered: Int, cpu: [String: CPUCost]?, memory: RedisMemoryProbe.Reading?) {
        if let cpu, !cpu.isEmpty {
            var perAuth = cpu.mapValues { Self.round($0.microsecondsPerRequest(answered), places: 2) }
            perAuth["total"] = Self.round(cpu.values.map { $0.microsecondsPerRequest(answered) }.reduce(0, +), places: 2)
            cpuMicrosecondsPerAuth = perAuth
            cpuSeconds = cpu.mapValues { Self.round($0.seconds, places: 3) }
            cpuResolutionMicroseconds = cpu.mapValues { Self.round($0.resolutionPerRequest(answered), places: 3) }
            cpuCoarse = cpu.filter(\.value.isCoarse).keys.sorted()
            cpuTicksPerSecond = ProcessCPU.ticksPerSecond
        }
        if let memory, answered > 0 {
            let count = Double(answered)
            memoryBytesPerAuth = [
                "idempotency": Self.round(Double(memory.rest) / count, places: 1),
                "stream": Self.round(Double(memory.stream) / count, places: 1),
                "stream_new_keys": Self.round(Double(memory.streamKeys) / count, places: 1),
                "total": Self.round(Double(memory.after - memory.before) / count, places: 1),
            ]
            self.memory = memory
        }
    }

    static func round(_ value: Double, places: Int) -> Double {
        let scale = [1.0, 10, 100, 1_000][min(places, 3)]
        return (value * scale).rounded() / scale
    }

    /// Lines for the text report.
    var lines: [String] {
        var lines: [String] = []
        if let perAuth = cpuMicrosecondsPerAuth {
            let names = perAuth.keys.filter { $0 != "total" }.sorted()
            let parts = names.map { name in
                let coarse = cpuCoarse?.contains(name) == true ? " (coarse: ±\(cpuResolutionMicroseconds?[name] ?? 0))" : ""
                return "\(name) \(perAuth[name] ?? 0)\(coarse)"
            }
            lines.append("cpu µs/req  \(parts.joined(separator: "  "))  total \(perAuth["total"] ?? 0)")
        }
        if let bytes = memoryBytesPerAuth {
            lines.append("memory B/req  idempotency \(bytes["idempotency"] ?? 0)  stream \(bytes["stream"] ?? 0) (new stream keys \(bytes["stream_new_keys"] ?? 0))  total \(bytes["total"] ?? 0)")
        }
        return lines
    }
}
