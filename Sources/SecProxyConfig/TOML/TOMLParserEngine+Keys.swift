/// One segment of a (dotted) key.
struct TOMLKeySegment {
    var name: String
    /// Index of its first character (the opening quote for quoted keys).
    var index: Int
}

/// Keys: bare, quoted and dotted, and `key = value` pairs.
extension TOMLParserEngine {
    /// How messages show a key segment: bare when it can be, else quoted.
    static func display(_ name: String) -> String {
        if !name.isEmpty && name.unicodeScalars.allSatisfy({ C.isBare($0.value) }) { return name }
        var quoted = "\""
        for scalar in name.unicodeScalars {
            switch scalar {
            case "\"": quoted += "\\\""
            case "\\": quoted += "\\\\"
            default: quoted.unicodeScalars.append(scalar)
            }
        }
        return quoted + "\""
    }

    static func display(_ key: ArraySlice<TOMLKeySegment>) -> String {
        key.map { display($0.name) }.joined(separator: ".")
    }

    static func display(_ key: [TOMLKeySegment]) -> String { display(key[...]) }

    /// Parses a possibly dotted key at `i` (whitespace around dots allowed).
    func parseKey() throws(TOMLFailure) -> [TOMLKeySegment] {
        var segments: [TOMLKeySegment] = []
        while true {
            skipWS()
            let start = i
            let c = ch(i)
            if C.isBare(c) {
                while C.isBare(ch(i)) { i += 1 }
                segments.append(TOMLKeySegment(name: text(start..<i), index: start))
            } else if c == C.quote || c == C.apostrophe {
                if ch(i + 1) == c && ch(i + 2) == c {
                    throw fail("multi-line strings cannot be used as keys", at: start)
                }
                let name = c == C.quote ? try parseBasicString() : try parseLiteralString()
                segments.append(TOMLKeySegment(name: name, index: start))
            } else if segments.isEmpty {
                throw fail("expected a key, found \(describe(i))", at: i)
            } else {
                throw fail("expected a key after '.', found \(describe(i))", at: i)
            }
            let save = i
            skipWS()
            if ch(i) == C.dot {
                i += 1
                continue
            }
            i = save
            return segments
        }
    }

    /// `key = value`, in a statement or an inline table. The value is parsed `key.count - 1` levels below
    /// `depth` (the tables the dotted key creates); `depth` is as before when this returns or throws.
    func parseKeyValue() throws(TOMLFailure) -> (key: [TOMLKeySegment], value: TOMLNode) {
        let key = try parseKey()
        let afterKey = i
        skipWS()
        guard ch(i) == C.equals else {
            let c = ch(i)
            if afterKey == i && !isEOL(i) && c != C.quote && c != C.apostrophe && c != C.hash
                && c != C.rbrace && c != C.comma
            {
                throw fail(
                    "invalid character \(characterName(i)) in key '\(Self.display(key))'; bare keys may only contain A-Z a-z 0-9 _ -",
                    at: i)
            }
            throw fail("expected '=' after key '\(Self.display(key))'", at: i)
        }
        let outer = depth
        let tables = key.count - 1
        if outer + tables > TOMLParser.maximumNesting {
            throw tooDeep(at: key[TOMLParser.maximumNesting - outer].index)
        }
        i += 1
        skipWS()
        let c = ch(i)
        if isEOL(i) || c == C.hash || c == C.comma || c == C.rbrace {
            throw fail("missing value for key '\(Self.display(key))'", at: i)
        }
        depth = outer + tables
        defer { depth = outer }
        let value = try parseValue()
        return (key, value)
    }
}
