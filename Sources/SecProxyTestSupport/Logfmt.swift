/// Parser for logfmt lines: `key=value key="quoted \" value" key=`.
public enum Logfmt {
    /// The fields of one logfmt line; later duplicates win. An empty value (`key=`) or a bare `key`
    /// gives "". Quoted values understand `\"`, `\\`, `\n`, `\t`, `\r`.
    public static func parse(_ line: String) -> [String: String] {
        var fields: [String: String] = [:]
        let chars = Array(line.unicodeScalars)
        var index = 0
        func skipSpaces() {
            while index < chars.count, chars[index] == " " || chars[index] == "\t" { index += 1 }
        }
        while true {
            skipSpaces()
            if index >= chars.count { break }
            var key = String.UnicodeScalarView()
            while index < chars.count, chars[index] != "=", chars[index] != " ", chars[index] != "\t" {
                key.append(chars[index])
                index += 1
            }
            var value = String.UnicodeScalarView()
            if index < chars.count, chars[index] == "=" {
                index += 1
                if index < chars.count, chars[index] == "\"" {
                    index += 1
                    while index < chars.count, chars[index] != "\"" {
                        if chars[index] == "\\", index + 1 < chars.count {
                            index += 1
                            switch chars[index] {
                            case "n": value.append("\n")
                            case "t": value.append("\t")
                            case "r": value.append("\r")
                            default: value.append(chars[index])
                            }
                        } else {
                            value.append(chars[index])
                        }
                        index += 1
                    }
                    index += 1  // closing quote
                } else {
                    while index < chars.count, chars[index] != " ", chars[index] != "\t" {
                        value.append(chars[index])
                        index += 1
                    }
                }
            }
            if !key.isEmpty { fields[String(key)] = String(value) }
        }
        return fields
    }

    /// The keys of one logfmt line in the order written (to check that a field is present, even empty).
    public static func keys(_ line: String) -> [String] {
        var keys: [String] = []
        var seen = Set<String>()
        // Re-parse minimally: a key starts after whitespace outside quotes.
        var inQuotes = false
        var escaped = false
        var current = ""
        var readingKey = true
        for scalar in line.unicodeScalars {
            if inQuotes {
                if escaped {
                    escaped = false
                } else if scalar == "\\" {
                    escaped = true
                } else if scalar == "\"" {
                    inQuotes = false
                }
                continue
            }
            if scalar == " " || scalar == "\t" {
                if readingKey, !current.isEmpty, seen.insert(current).inserted { keys.append(current) }
                current = ""
                readingKey = true
                continue
            }
            if readingKey {
                if scalar == "=" {
                    if !current.isEmpty, seen.insert(current).inserted { keys.append(current) }
                    current = ""
                    readingKey = false
                } else {
                    current.unicodeScalars.append(scalar)
                }
            } else if scalar == "\"" {
                inQuotes = true
            }
        }
        if readingKey, !current.isEmpty, seen.insert(current).inserted { keys.append(current) }
        return keys
    }
}
