/// Edit distance between short identifiers, used to suggest the key a user probably meant.
enum EditDistance {
    /// The optimal-string-alignment (restricted Damerau-Levenshtein) distance: insertions, deletions,
    /// substitutions and transpositions of two adjacent characters each cost 1.
    static func between(_ a: String, _ b: String) -> Int {
        let a = Array(a.unicodeScalars)
        let b = Array(b.unicodeScalars)
        if a.isEmpty { return b.count }
        if b.isEmpty { return a.count }
        // Three rolling rows: the one before the previous one is needed for transpositions.
        var beforePrevious = [Int](repeating: 0, count: b.count + 1)
        var previous = Array(0...b.count)
        var current = [Int](repeating: 0, count: b.count + 1)
        for i in 1...a.count {
            current[0] = i
            for j in 1...b.count {
                let cost = a[i - 1] == b[j - 1] ? 0 : 1
                var best = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
                if i > 1, j > 1, a[i - 1] == b[j - 2], a[i - 2] == b[j - 1] {
                    best = min(best, beforePrevious[j - 2] + 1)
                }
                current[j] = best
            }
            (beforePrevious, previous, current) = (previous, current, beforePrevious)
        }
        return previous[b.count]
    }

    /// The candidate the user probably meant by `word`: the closest one when it is at most 2 edits away (or a
    /// third of the word's length, for long words) and at most half the word's length, so that short words do
    /// not get far-fetched suggestions; failing that, the first candidate that `word` (4 characters or more)
    /// is the beginning of ("health" for "health_check"). Case is ignored; ties go to the earlier candidate.
    static func closest(to word: String, among candidates: [String]) -> String? {
        let lowered = word.lowercased()
        let length = lowered.unicodeScalars.count
        let limit = min(max(2, length / 3), length / 2)
        var best: (candidate: String, distance: Int)?
        for candidate in candidates {
            let distance = between(lowered, candidate.lowercased())
            if distance <= limit, distance < (best?.distance ?? Int.max) {
                best = (candidate, distance)
            }
        }
        if let best { return best.candidate }
        guard length >= 4 else { return nil }
        return candidates.first { $0.lowercased().hasPrefix(lowered) }
    }
}
