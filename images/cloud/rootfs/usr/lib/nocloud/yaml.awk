# Flattens the YAML that NoCloud seeds use (meta-data, network-config, #cloud-config user-data)
# into one line per scalar: `path<TAB>value`, the path's parts joined by "." with list items
# numbered from 0 (write_files.0.path, runcmd.1.0). In values a backslash is written `\\` and a
# newline `\n`, so `printf %b` gives the value back exactly.
#
# The subset: block mappings and sequences (a sequence may sit at its key's indentation),
# `- key: value` items, plain, 'single' and "double" quoted scalars on one line, flow sequences
# of scalars ([a, 'b c']), `{}` and `[]`, block scalars (| |- > >-), comments, `---`. Anchors,
# tags, multi-line quoted scalars and nested flow collections are not read.

function escape(v) {
    gsub(/\\/, "\\\\", v)
    gsub(/\n/, "\\n", v)
    gsub(/\t/, " ", v)
    return v
}
function emit(path, value) {
    sub(/^\./, "", path)
    printf "%s\t%s\n", path, escape(value)
}
function trim(v) {
    sub(/^[ \t]+/, "", v)
    sub(/[ \t\r]+$/, "", v)
    return v
}
# One scalar as written after "key:" or "- ": quotes removed, a trailing comment dropped.
function scalar(v,    out, i, c) {
    v = trim(v)
    if (substr(v, 1, 1) == "'") {
        v = substr(v, 2)
        out = ""
        while (length(v) > 0) {
            i = index(v, "'")
            if (i == 0) { out = out v; break }
            out = out substr(v, 1, i - 1)
            if (substr(v, i + 1, 1) == "'") { out = out "'"; v = substr(v, i + 2) }
            else break
        }
        return out
    }
    if (substr(v, 1, 1) == "\"") {
        v = substr(v, 2)
        out = ""
        while (length(v) > 0) {
            c = substr(v, 1, 1)
            if (c == "\"") break
            if (c == "\\") {
                c = substr(v, 2, 1)
                v = substr(v, 3)
                if (c == "n") out = out "\n"
                else if (c == "t") out = out "\t"
                else out = out c
                continue
            }
            out = out c
            v = substr(v, 2)
        }
        return out
    }
    sub(/[ \t]+#.*$/, "", v)
    if (v == "~" || v == "null") return ""
    return v
}
# Splits a flow sequence "[a, 'b, c']" into items(1..n); returns n.
function flow(v, items,    n, cur, c, q) {
    v = trim(v)
    v = substr(v, 2, length(v) - 2)
    n = 0; cur = ""; q = ""
    while (length(v) > 0) {
        c = substr(v, 1, 1)
        v = substr(v, 2)
        if (q != "") {
            cur = cur c
            if (c == q) q = ""
        } else if (c == "'" || c == "\"") {
            cur = cur c; q = c
        } else if (c == ",") {
            items[++n] = scalar(cur); cur = ""
        } else cur = cur c
    }
    if (trim(cur) != "") items[++n] = scalar(cur)
    return n
}
function push(indent, path, kind) {
    depth++
    ind[depth] = indent; pth[depth] = path; knd[depth] = kind; cnt[depth] = 0
}
# A value after "key:" or "- ": a scalar, a flow sequence, a block scalar or (empty) a container
# whose children follow on the next lines.
function value(path, v, at,    n, i, items) {
    v = trim(v)
    if (v == "" || v ~ /^#/) { pending = path; pending_at = at; return }
    if (v ~ /^[|>][-+]?$/) { block = path; block_at = at; block_style = v; block_text = ""; block_indent = -1; return }
    if (v ~ /^\[.*\]$/) {
        n = flow(v, items)
        for (i = 1; i <= n; i++) emit(path "." (i - 1), items[i])
        return
    }
    if (v == "{}") return
    emit(path, scalar(v))
}
function end_block(    text) {
    text = block_text
    if (block_style ~ /^>/) {
        gsub(/\n\n/, "\001", text)
        gsub(/\n/, " ", text)
        gsub(/\001/, "\n", text)
        sub(/ $/, "", text)
        text = text "\n"
    }
    if (block_style ~ /-$/) sub(/\n+$/, "", text)
    emit(block, text)
    block = ""
}
# A "key: value" at column `col` (inside the mapping on top of the stack).
function mapping(text, col,    key, rest) {
    if (!match(text, /^("[^"]*"|'[^']*'|[^ \t"'][^:]*):([ \t]|$)/)) return 0
    key = scalar(substr(text, 1, RLENGTH - 1))
    sub(/:[ \t]*$/, "", key)
    rest = substr(text, RLENGTH + 1)
    value(pth[depth] "." key, rest, col)
    return 1
}
BEGIN { depth = 0; push(0, "", "map"); pending = ""; block = "" }
{
    sub(/\r$/, "")
    line = $0
    match(line, /^ */)
    n = RLENGTH
    text = substr(line, n + 1)
    if (block != "") {
        if (text == "" || (n > block_at && (block_indent < 0 || n >= block_indent))) {
            if (block_indent < 0 && text != "") block_indent = n
            block_text = block_text (text == "" ? "" : substr(line, block_indent + 1)) "\n"
            next
        }
        end_block()
    }
    if (text == "" || text ~ /^#/ || line ~ /^(---|\.\.\.)/) next
    if (pending != "") {
        if (n > pending_at || (n == pending_at && text ~ /^-( |$)/)) push(n, pending, text ~ /^-( |$)/ ? "seq" : "map")
        else emit(pending, "")
        pending = ""
    }
    while (depth > 1 && (n < ind[depth] || (n == ind[depth] && knd[depth] == "seq" && text !~ /^-( |$)/))) depth--
    col = n
    # "- - x" and "- key: v" open containers on the same line.
    while (text ~ /^-( |$)/ && knd[depth] == "seq") {
        item = pth[depth] "." cnt[depth]++
        rest = substr(text, 2)
        match(rest, /^ */)
        col = col + 1 + RLENGTH
        text = substr(rest, RLENGTH + 1)
        if (text == "" || text ~ /^#/) { pending = item; pending_at = col - 1; text = ""; break }
        if (text ~ /^-( |$)/) { push(col, item, "seq"); continue }
        if (mapping_line(text)) { push(col, item, "map"); break }
        value(item, text, col - 1)
        text = ""
        break
    }
    if (text == "") next
    if (knd[depth] == "map") mapping(text, col)
}
function mapping_line(text) {
    return text ~ /^("[^"]*"|'[^']*'|[^ \t"'\[{][^:]*):([ \t]|$)/
}
END {
    if (block != "") end_block()
    if (pending != "") emit(pending, "")
}
