import Foundation
import LoadGenerator
import XCTest

final class ProcessCPUTests: XCTestCase {
    func testParsesUtimeAndStimeAfterACommandNameWithSpacesAndParentheses() throws {
        // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime cutime cstime …
        let line = "4242 (a (weird) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 1234 567 89 10 20 0 4 0 12345 100000 200 18446744073709551615\n"
        XCTAssertEqual(ProcessCPU.parse(stat: line), ProcessCPU(userTicks: 1_234, systemTicks: 567))
        XCTAssertEqual(ProcessCPU.parse(stat: line)?.ticks, 1_801)
    }

    func testRejectsATruncatedLine() {
        XCTAssertNil(ProcessCPU.parse(stat: "4242 (redis-server) S 1 4242 4242 0 -1 4194560 100 0 0"))
        XCTAssertNil(ProcessCPU.parse(stat: "no parenthesis here"))
    }

    func testThisProcessGainsTheCPUItBurns() throws {
        guard FileManager.default.fileExists(atPath: "/proc/self/stat") else { throw XCTSkip("no /proc") }
        let before = try XCTUnwrap(ProcessCPU.read(pid: 0))
        XCTAssertEqual(Double(ProcessCPU.read(pid: getpid())?.ticks ?? 0), Double(before.ticks), accuracy: 2, "pid 0 is this process")
        // Burn 300 ms of CPU time (not wall time: a shared machine may not give it at once).
        var sum: UInt64 = 0
        let start = try XCTUnwrap(ProcessCPU.read(pid: 0)).ticks
        let giveUp = Date().addingTimeInterval(10)  // a broken reader must not spin forever
        while (ProcessCPU.read(pid: 0)?.ticks ?? start) < start + UInt64(ProcessCPU.ticksPerSecond * 3 / 10), Date() < giveUp {
            for value in 0..<100_000 { sum &+= UInt64(value) &* 2_654_435_761 }
        }
        let after = try XCTUnwrap(ProcessCPU.read(pid: 0))
        XCTAssertNotEqual(sum, 1)
        XCTAssertGreaterThanOrEqual(after.ticks - before.ticks, UInt64(ProcessCPU.ticksPerSecond * 3 / 10))
        XCTAssertLessThan(after.ticks - before.ticks, UInt64(ProcessCPU.ticksPerSecond * 10), "ticks, not microseconds")
    }

    func testAVanishedProcessReadsAsNil() {
        XCTAssertNil(ProcessCPU.read(pid: Int32.max))
    }

    func testCostPerRequestAndItsResolution() {
        let cost = CPUCost(ticks: 250, processes: 2)
        let hz = Double(ProcessCPU.ticksPerSecond)
        XCTAssertEqual(cost.seconds, 250 / hz, accuracy: 1e-9)
        XCTAssertEqual(cost.microsecondsPerRequest(10_000), 250 / hz * 1e6 / 10_000, accuracy: 1e-9)
        XCTAssertEqual(cost.resolutionPerRequest(10_000), 2 / hz * 1e6 / 10_000, accuracy: 1e-9)
        XCTAssertFalse(cost.isCoarse)
        XCTAssertTrue(CPUCost(ticks: 150, processes: 2).isCoarse, "under 100 ticks per process")
        XCTAssertEqual(cost.microsecondsPerRequest(0), 0)
    }
}
