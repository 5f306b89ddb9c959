import Glibc

/// The wall clock in microseconds since 1970: the order of two attempts of
/// one id received by different serves (their clocks kept in step by NTP).
enum WallClock {
    static func micros() -> Int64 {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        let micros = Int64(now.tv_sec) * 1_000_000 + Int64(now.tv_nsec) / 1_000
        assert(micros > 0)
        return micros
    }
}
