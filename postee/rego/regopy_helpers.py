"""The Rego helper package loaded next to every module on the regopy backend.

`regopy_compat` redirects calls of `sprintf`, `jsonformat`, `trim_space`, `upper`, `any`, `all` and
`trace` here, and makes `some ... in` iterate through `ordered`/`ordered_keys`. Each helper exists
because of a measured regopy 1.5.2 difference from OPA, written next to it. The package name is top level (not
under `postee`) because regopy leaks enclosing package names into child packages.

Two regopy facts shape how these are written: strings are held JSON-escaped inside the engine (so
`"\\n"` is two characters to `regex` and `count`, and a line break cannot be matched by a regex),
and its `trim`, `trim_left`, `trim_right`, `trim_space` return the *unescaped* text, which then comes
out as invalid JSON; so the helpers use only `substring`, `count`, `split`, `concat`, `replace`,
`regex.find_n`/`regex.split`/`regex.match` and single-argument `sprintf`.
"""

HELPER_PACKAGE = "postee_regopy_compat"

HELPER_SOURCE = r"""package postee_regopy_compat

import future.keywords.in

# Helpers for Postee-dialect Rego on regopy; calls are redirected here by postee.rego.regopy_compat.

# No constant rules here, only functions: a query of the whole `data` document (body templates)
# evaluates every constant, and regopy's output of some of them is not valid JSON.

# Go's fmt.Sprintf as OPA calls it, one verb at a time: regopy's own sprintf quotes computed strings
# when it is given several arguments, so it is only ever called here with a single argument.
go_sprintf(format, args) := out {
	verbs := regex.find_n(`%[-+# 0]*[0-9]*(?:\.[0-9]*)?[a-zA-Z%]`, format, -1)
	texts := regex.split(`%[-+# 0]*[0-9]*(?:\.[0-9]*)?[a-zA-Z%]`, format)
	out := concat("", [piece | some i; text := texts[i]; piece := _piece(i, text, verbs, args)])
}

_piece(i, text, verbs, args) := text {
	i >= count(verbs)
}

_piece(i, text, verbs, args) := concat("", [text, formatted]) {
	i < count(verbs)
	n := count([j | verbs[j]; j < i; verbs[j] != "%%"])
	formatted := _verb(verbs[i], n, args)
}

_verb(verb, n, args) := "%" {
	verb == "%%"
}

_verb(verb, n, args) := _one(verb, args[n]) {
	verb != "%%"
	n < count(args)
}

_verb(verb, n, args) := concat("", ["%!", substring(verb, count(verb) - 1, 1), "(MISSING)"]) {
	verb != "%%"
	n >= count(args)
}

_plain_verb(verb) {
	verb == "%s"
}

_plain_verb(verb) {
	verb == "%v"
}

# OPA hands strings to Go as strings, numbers as numbers and every other value as its Rego text.
_one(verb, arg) := arg {
	_plain_verb(verb)
	is_string(arg)
}

_one(verb, arg) := sprintf(verb, [arg]) {
	not _plain_verb(verb)
	is_string(arg)
}

_one(verb, arg) := sprintf(verb, [arg]) {
	is_number(arg)
}

_one(verb, arg) := sprintf(verb, [sprintf("%v", [arg])]) {
	not is_string(arg)
	not is_number(arg)
}

# Postee's custom builtin: Go's json.MarshalIndent(x, "", " "). regopy's pretty JSON differs only in
# Go's HTML-safe escapes and in float spelling (1.0, 1e-07), which _go_numbers repairs.
jsonformat(x) := out {
	pretty := json.marshal_with_options(x, {"indent": " ", "pretty": true})
	escaped := strings.replace_n(_go_escapes(pretty), pretty)
	out := _go_numbers(escaped)
}

_go_escapes(_) := {
	"&": "\\u0026",
	"<": "\\u003c",
	">": "\\u003e",
	"\u2028": "\\u2028",
	"\u2029": "\\u2029",
}

# In indented JSON a number is alone on its line (after an optional key), never inside a string, so
# a line-wise edit of number tokens is exact. (Strings are held JSON-escaped inside regopy, so a
# regex cannot see line breaks: the text is split into lines instead.)
_go_numbers(text) := concat("\n", [_go_number_line(line) | some line in split(text, "\n")])

_go_number_line(line) := line {
	not regex.match(`(^ *|": )-?[0-9]+(\.[0-9]+)?(e[-+][0-9]+)?,?$`, line)
}

_go_number_line(line) := fixed {
	regex.match(`(^ *|": )-?[0-9]+(\.[0-9]+)?(e[-+][0-9]+)?,?$`, line)
	fixed := replace(_drop_point_zero(line), "e-0", "e-")
}

_drop_point_zero(line) := line {
	count(regex.find_n(`\.0+,?$`, line, 1)) == 0
}

# substring/count, not trim_right: regopy's trim family unescapes the text it returns.
_drop_point_zero(line) := concat("", [substring(line, 0, count(line) - count(zeros)), _trailing_comma(line)]) {
	zeros := regex.find_n(`\.0+,?$`, line, 1)[0]
}

_trailing_comma(line) := "," {
	endswith(line, ",")
}

_trailing_comma(line) := "" {
	not endswith(line, ",")
}

# `sprintf` with a constant format is expanded at load time into `concat` of these per-argument
# pieces (the runtime go_sprintf costs ~40x a native call).
fmt_plain(arg) := arg {
	is_string(arg)
}

fmt_plain(arg) := sprintf("%v", [arg]) {
	not is_string(arg)
}

fmt_verb(verb, arg) := _one(verb, arg)

# OPA iterates sets in sorted order and objects in sorted key order; regopy in insertion order.
# `some ... in X` is rewritten to iterate these instead.
ordered(x) := x {
	is_array(x)
}

ordered(x) := sort(x) {
	is_set(x)
}

ordered(x) := [x[k] | some k in ordered_keys(x)] {
	is_object(x)
}

ordered_keys(x) := sort([k | some k; _ = x[k]]) {
	is_object(x)
}

ordered_keys(x) := sort(x) {
	is_set(x)
}

ordered_keys(x) := numbers.range(0, count(x) - 1) {
	is_array(x)
	count(x) > 0
}

ordered_keys(x) := [] {
	is_array(x)
	count(x) == 0
}

# OPA's deprecated any/all (Rego v0), missing from regopy.
any(xs) := result {
	result := count([1 | xs[_] == true]) > 0
}

all(xs) := result {
	result := count([1 | x := xs[_]; x != true]) == 0
}

trace(note) := true

# upper() runs over the escaped text, turning \n into \N. Real backslashes (stored \\) are set
# aside first, so that only escape letters are put back.
str_upper(s) := upper(s) {
	not contains(s, "\\")
}

str_upper(s) := out {
	contains(s, "\\")
	protected := replace(s, "\\", "\ue000")
	out := replace(strings.replace_n(_upper_escapes(s), upper(protected)), "\ue000", "\\")
}

_upper_escapes(_) := {
	upper("\n"): "\n",
	upper("\t"): "\t",
	upper("\r"): "\r",
	upper("\b"): "\b",
	upper("\f"): "\f",
	substring(upper("\u0001"), 0, 2): substring("\u0001", 0, 2),
}

# regopy keeps strings JSON-escaped inside (`a\"b`); its trim_space returns them unescaped, which
# then comes out as invalid JSON. This one works on the escaped form: spaces and \n \t \r escapes.
str_trim_space(s) := out {
	lead := concat("", regex.find_n(`^( |\\[ntr])*`, s, 1))
	rest := substring(s, count(lead), -1)
	tail := concat("", regex.find_n(`( |\\[ntr])*$`, rest, 1))
	out := substring(rest, 0, count(rest) - count(tail))
}
"""
