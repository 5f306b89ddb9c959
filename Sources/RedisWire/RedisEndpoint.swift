/// Where Redis is and who we are to it: `redis://[user[:password]@]host[:port][/db]`.
public struct RedisEndpoint: Sendable, Equatable, CustomStringConvertible {
    public var host: String
    public var port: Int
    public var database: Int
    public var username: String?
    public var password: String?

    public init(host: String = "127.0.0.1", port: Int = 6379, database: Int = 0, username: String? = nil, password: String? = nil) {
        self.host = host
        self.port = port
        self.database = database
        self.username = username
        self.password = password
    }

    public enum ParseError: Error, CustomStringConvertible {
        case invalid(String)
        public var description: String {
            switch self {
            case .invalid(let why): return "invalid redis URL: \(why)"
            }
        }
    }

    public init(url: String) throws {
        let prefix = "redis://"
        guard url.hasPrefix(prefix) else { throw ParseError.invalid("must start with redis://") }
        var rest = Substring(url.dropFirst(prefix.count))
        var endpoint = RedisEndpoint()
        if let at = rest.lastIndex(of: "@") {
            let credentials = rest[..<at]
            rest = rest[rest.index(after: at)...]
            if let colon = credentials.firstIndex(of: ":") {
                let user = credentials[..<colon]
                endpoint.username = user.isEmpty ? nil : String(user).removingPercentEncoding()
                endpoint.password = String(credentials[credentials.index(after: colon)...]).removingPercentEncoding()
            } else if !credentials.isEmpty {
                endpoint.username = String(credentials).removingPercentEncoding()
            }
        }
        if let slash = rest.firstIndex(of: "/") {
            let db = rest[rest.index(after: slash)...]
            rest = rest[..<slash]
            if !db.isEmpty {
                guard let number = Int(db), number >= 0, number < 16_384 else { throw ParseError.invalid("database must be a number") }
                endpoint.database = number
            }
        }
        if let colon = rest.lastIndex(of: ":") {
            guard let port = Int(rest[rest.index(after: colon)...]), (1...65_535).contains(port) else {
                throw ParseError.invalid("port must be 1-65535")
            }
            endpoint.port = port
            rest = rest[..<colon]
        }
        if !rest.isEmpty { endpoint.host = String(rest) }
        self = endpoint
    }

    /// The URL without the password, for logs.
    public var description: String {
        let user = username.map { "\($0)@" } ?? (password != nil ? ":***@" : "")
        return "redis://\(user)\(host):\(port)/\(database)"
    }
}

extension String {
    func removingPercentEncoding() -> String {
        var bytes: [UInt8] = []
        var iterator = Array(utf8).makeIterator()
        while let byte = iterator.next() {
            if byte == UInt8(ascii: "%"), let high = iterator.next(), let low = iterator.next(),
               let value = UInt8(String(decoding: [high, low], as: UTF8.self), radix: 16) {
                bytes.append(value)
            } else {
                bytes.append(byte)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
