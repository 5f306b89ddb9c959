/// A Lua script that runs inside Redis, called by its SHA1 with EVALSHA.
public struct LuaScript: Sendable, Hashable {
    public let name: String
    public let source: String

    public init(name: String, source: String) {
        self.name = name
        self.source = source
    }
}

/// SHA1s as Redis reported them from SCRIPT LOAD.
struct LoadedScripts {
    var shas: [String: String] = [:]

    func sha(of script: LuaScript) -> String? { shas[script.name] }
}
