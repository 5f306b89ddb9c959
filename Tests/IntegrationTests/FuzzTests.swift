import Foundation
import XCTest

/// Throws 100,000 generated lines at a running `serve`: it never crashes,
/// every complete line gets exactly one answer, valid requests interleaved
/// with the garbage are answered correctly, and balances stay consistent.
final class FuzzTests: IntegrationTestCase {
    // Requests for one account are served one at a time; on a loaded machine a
    // deep pipeline can outlast the 100 ms budget and get `07 account busy`.
    // These tests check decisions, not speed (that is `make bench`'s job).
    override var serveArguments: [String] { ["--sla-ms", "5000"] }

    /// Deterministic generator (SplitMix64), so a failure can be replayed.
    struct SplitMix64: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    static let lineCount = 100_000
    static let validEvery = 25

    func testHundredThousandGeneratedLines() throws {
        // Valid requests go to "valid-acct"; the corpus and its mutations
        // name "fzg" and "fz1" (no mutation turns either into "valid-acct").
        let start: Int64 = 1_000_000_000
        try account("valid-acct", ["FOOD": start])
        try account("fzg", ["FOOD": start, "MEAL": start, "CASH": start])
        try account("fz1", ["FOOD": start])
        let seed = UInt64(ProcessInfo.processInfo.environment["FUZZ_SEED"] ?? "") ?? 20_261_124
        var random = SplitMix64(state: seed)
        let client = try serve.connect()
        var validIDs: [Int: String] = [:]  // answer index -> id of a valid request
        var expectedAnswers = 0
        var validCount = 0
        var batch: [UInt8] = []
        var pendingAnswers = 0

        func flush() throws {
            try client.send(bytes: batch)
            batch.removeAll(keepingCapacity: true)
            for _ in 0..<pendingAnswers {
                let index = expectedAnswers - pendingAnswers
                let line = try XCTUnwrap(client.readLine(), "serve closed the connection (seed \(seed))")
                let answer = try Response(line: line)
                if let id = validIDs.removeValue(forKey: index) {
                    XCTAssertEqual(answer.id, id, "seed \(seed)")
                    XCTAssertEqual(answer.code, "00", "seed \(seed): \(line)")
                } else {
                    // A mutation may still be a valid request: any code, but a 07 says why.
                    XCTAssertTrue(["00", "51", "07"].contains(answer.code), "seed \(seed): \(line)")
                    if answer.code == "07" { XCTAssertNotNil(answer.reason, "seed \(seed): \(line)") }
                }
                pendingAnswers -= 1
            }
        }

        for lineNumber in 0..<Self.lineCount {
            var line: [UInt8]
            if lineNumber % Self.validEvery == 0 {
                let id = "fz-\(seed)-\(lineNumber)"
                line = Array(Request.line(id: id, account: "valid-acct", amount: "1.00", mcc: "5411").utf8)
                validIDs[expectedAnswers] = id
                validCount += 1
            } else {
                line = Self.garbage(using: &random)
            }
            line.removeAll { $0 == 0x0A }
            batch.append(contentsOf: line)
            batch.append(0x0A)
            let blank = line.allSatisfy { $0 == 0x20 || $0 == 0x09 || $0 == 0x0D }
            if !blank {
                expectedAnswers += 1
                pendingAnswers += 1
            }
            if batch.count > 256 * 1024 || pendingAnswers >= 500 { try flush() }
        }
        try flush()

        let entries = try redis.statements()
        XCTAssertEqual(try redis.balances("valid-acct"), ["FOOD": start - Int64(validCount) * 100])
        XCTAssertEqual(entries.filter { $0["account"] == "valid-acct" && $0["code"] == "00" }.count, validCount)
        // Whatever garbage the server took as a valid request, the independent
        // oracle, fed the request as the ledger recorded it, agrees with every
        // decision and with the final balances.
        var oracle = DecisionOracle(balances: [
            "valid-acct": ["FOOD": start], "fzg": ["FOOD": start, "MEAL": start, "CASH": start], "fz1": ["FOOD": start],
        ])
        for entry in entries where entry["type"] == "authorization" {
            guard let cents = Int64(entry["amount", default: ""]) else { XCTFail("amount of \(entry)"); continue }
            let outcome = oracle.decide(
                id: entry["id", default: ""], account: entry["account", default: ""], cents: cents,
                mcc: entry["mcc", default: ""], merchant: entry["merchant", default: ""]
            )
            XCTAssertEqual(entry["code"], outcome.code, "seed \(seed): \(entry) vs oracle \(outcome)")
            XCTAssertEqual(entry["debits"], outcome.debitsField, "seed \(seed): \(entry)")
        }
        for (id, balances) in oracle.balances {
            XCTAssertEqual(try redis.balances(id), balances, "seed \(seed): account \(id)")
        }

        // A 10 MiB line: 07, connection closed, server still fine.
        let huge = try serve.connect()
        try? huge.send(bytes: [UInt8](repeating: UInt8(ascii: "{"), count: 10 << 20) + [0x0A])
        XCTAssertEqual(try huge.readResponse().code, "07")
        XCTAssertNil(try? huge.readLine())
        let after = try serve.connect()
        XCTAssertEqual(try after.request(["account": "valid-acct", "totalAmount": 1, "mcc": "5411", "merchant": "M"]).code, "00")
    }

    /// A line the server must refuse: mutated seeds, random bytes, truncations.
    static func garbage(using random: inout SplitMix64) -> [UInt8] {
        let seeds = FuzzCorpus.seeds
        var line: [UInt8]
        switch random.next() % 6 {
        case 0:  // random bytes
            line = (0..<Int(random.next() % 300)).map { _ in UInt8(truncatingIfNeeded: random.next()) }
        case 1:  // a truncated valid request
            let valid = Array(Request.line(account: "fz1", amount: "1.00", mcc: "5411").utf8)
            line = Array(valid.prefix(Int(random.next() % UInt64(valid.count))))  // never the whole line
        case 2:  // a seed with flipped bytes
            line = seeds[Int(random.next() % UInt64(seeds.count))]
            for _ in 0..<(1 + random.next() % 4) where !line.isEmpty {
                line[Int(random.next() % UInt64(line.count))] = UInt8(truncatingIfNeeded: random.next())
            }
        case 3:  // two seeds spliced
            let first = seeds[Int(random.next() % UInt64(seeds.count))]
            let second = seeds[Int(random.next() % UInt64(seeds.count))]
            line = Array(first.prefix(Int(random.next() % UInt64(first.count + 1)))) + Array(second.suffix(Int(random.next() % UInt64(second.count + 1))))
        case 4:  // a valid request for fz1 with one field replaced by a hostile value
            let hostile = ["1e309", "-0", "0.001", "\"NaN\"", "null", "[]", "{}", "\"\"", "99999999999999999999", "\"1,00\"", "true", "-1", "\"\\u0000\""]
            let value = hostile[Int(random.next() % UInt64(hostile.count))]
            let fields = ["account", "totalAmount", "mcc", "merchant"]
            let field = fields[Int(random.next() % UInt64(fields.count))]
            var members = ["\"account\":\"fz1\"", "\"totalAmount\":\"1.00\"", "\"mcc\":\"5411\"", "\"merchant\":\"M\""]
            members[fields.firstIndex(of: field) ?? 0] = "\"\(field)\":\(value)"
            line = Array(("{" + members.joined(separator: ",") + "}").utf8)
        default:  // a seed as is
            line = seeds[Int(random.next() % UInt64(seeds.count))]
        }
        return line
    }
}
