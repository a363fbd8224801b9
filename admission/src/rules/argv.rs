//! How a shell-aware reviewer reads an argv: through the wrappers that run another program
//! (`env`, `nice`, `timeout`, `busybox`, `npx`, ...) to the program that really runs, and
//! whether that program is a shell, a shell script, or an interpreter given code inline
//! (`python -c`, `node -e`, `perl -e`). Commands are exec'd, never given to a shell, so any
//! of these reintroduces what `noShell` exists to prevent. Pure: no I/O.
//!
//! What it cannot see (documented in docs/webhooks.md): a server binary that starts a shell
//! itself, a script in the image whose name does not say what interprets it, and code an
//! interpreter reads from a file the image ships.

/// Programs that interpret commands: any use of one runs shell code.
const SHELLS: &[&str] = &[
    "sh",
    "bash",
    "dash",
    "ash",
    "zsh",
    "ksh",
    "ksh93",
    "mksh",
    "pdksh",
    "yash",
    "fish",
    "csh",
    "tcsh",
    "hush",
    "rbash",
    "posh",
    "pwsh",
    "powershell",
    "cmd",
    "nu",
    "elvish",
    "xonsh",
    "rc",
    "es",
    "oksh",
    "loksh",
    "busybox-sh",
];

/// Script suffixes whose shebang names a shell.
const SHELL_SCRIPT_SUFFIXES: &[&str] =
    &[".sh", ".bash", ".zsh", ".ksh", ".fish", ".csh", ".command"];

/// Programs that run their arguments through `sh -c`, or take a shell command with `-c`.
const RUN_VIA_SHELL: &[&str] = &["watch", "make", "gmake", "script", "expect", "su", "runuser"];

/// The program name without directories, lower case, without a trailing version
/// (`/usr/bin/python3.12` -> `python`, `node22` -> `node`).
fn program(arg: &str) -> String {
    let base = arg.rsplit(['/', '\\']).next().unwrap_or(arg).to_ascii_lowercase();
    let base = base.strip_suffix(".exe").unwrap_or(&base).to_string();
    let trimmed = base.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.' || c == '-');
    if trimmed.is_empty() { base } else { trimmed.to_string() }
}

/// Whether `a` is a short-option cluster (`-lc`) containing `letter` before any option that
/// takes a value.
fn cluster_has(a: &str, letter: char, takes_value: &[char]) -> bool {
    let Some(flags) = a.strip_prefix('-') else { return false };
    if flags.is_empty() || flags.starts_with('-') {
        return false;
    }
    for c in flags.chars() {
        if c == letter {
            return true;
        }
        if takes_value.contains(&c) {
            return false;
        }
    }
    false
}

/// Where the real program starts after a wrapper at `i`, or `None` when `argv[i]` is not a
/// wrapper. `Err` when the wrapper itself runs a shell command.
fn unwrap(argv: &[String], i: usize) -> Result<Option<usize>, String> {
    let prog = program(&argv[i]);
    let mut j = i + 1;
    let opts_then = |j: usize, with_value: &[&str]| -> usize {
        let mut j = j;
        while let Some(a) = argv.get(j) {
            if a == "--" {
                return j + 1;
            }
            if !a.starts_with('-') || a == "-" {
                break;
            }
            j += if with_value.contains(&a.as_str()) { 2 } else { 1 };
        }
        j
    };
    match prog.as_str() {
        "env" => {
            while let Some(a) = argv.get(j) {
                match a.as_str() {
                    "--" => {
                        j += 1;
                        break;
                    }
                    "-S" | "--split-string" => {
                        return Err(format!("{} -S splits a string into a command line", argv[i]));
                    }
                    "-u" | "--unset" | "-C" | "--chdir" => j += 2,
                    s if s.starts_with("--split-string=") || s.starts_with("-S") => {
                        return Err(format!("{} -S splits a string into a command line", argv[i]));
                    }
                    s if s.starts_with('-') && s.len() > 1 => j += 1,
                    s if s.contains('=') && !s.starts_with('=') => j += 1,
                    _ => break,
                }
            }
            while argv.get(j).is_some_and(|a| a.contains('=') && !a.starts_with('-')) {
                j += 1;
            }
            Ok(Some(j))
        }
        "nice" => Ok(Some(opts_then(j, &["-n", "--adjustment"]))),
        "ionice" => {
            Ok(Some(opts_then(j, &["-c", "-n", "-p", "-P", "-u", "--class", "--classdata"])))
        }
        "nohup" | "setsid" | "exec" | "command" | "time" | "tini" | "dumb-init" | "catatonit"
        | "unbuffer" | "builtin" | "doas" | "chronic" => Ok(Some(opts_then(j, &[]))),
        "sudo" => {
            if argv[j..].iter().any(|a| a == "-s" || a == "-i" || a == "--shell" || a == "--login")
            {
                return Err(format!("{} -s/-i starts a shell", argv[i]));
            }
            Ok(Some(opts_then(j, &["-u", "-g", "-C", "-D", "-h", "-p", "-r", "-t", "-U"])))
        }
        "stdbuf" => Ok(Some(opts_then(j, &["-i", "-o", "-e"]))),
        "taskset" | "chrt" => {
            j = opts_then(j, &[]);
            Ok(Some(j + 1))
        }
        "timeout" => {
            j = opts_then(j, &["-s", "--signal", "-k", "--kill-after"]);
            Ok(Some(j + 1))
        }
        "flock" => {
            if argv[j..].iter().any(|a| a == "-c" || a.starts_with("--command")) {
                return Err(format!("{} -c runs its argument through a shell", argv[i]));
            }
            j = opts_then(j, &["-w", "--timeout", "-E", "--conflict-exit-code"]);
            Ok(Some(j + 1))
        }
        "xargs" => Ok(Some(opts_then(
            j,
            &["-a", "-d", "-E", "-I", "-L", "-n", "-P", "-s", "--arg-file", "--delimiter"],
        ))),
        "busybox" | "toybox" => Ok(Some(j)),
        "npx" | "bunx" | "pnpx" => {
            if argv[j..].iter().any(|a| a == "-c" || a.starts_with("--call")) {
                return Err(format!("{} -c runs its argument through a shell", argv[i]));
            }
            // npx [options] PACKAGE [args]: the package is a program, not a shell.
            Ok(None)
        }
        "npm" | "pnpm" | "yarn" | "bun" => {
            let mut words = argv[j..].iter().filter(|a| !a.starts_with('-'));
            let sub = words.next().map(|s| s.as_str());
            // `bun run file.ts` runs a file; `bun run name` a package.json script.
            if prog == "bun"
                && sub == Some("run")
                && words.next().is_some_and(|f| f.contains('.') || f.contains('/'))
            {
                return Ok(None);
            }
            match sub {
                Some("run" | "run-script" | "start" | "test" | "restart" | "stop") => Err(format!(
                    "{} {} runs a package.json script through a shell",
                    argv[i],
                    sub.unwrap_or_default()
                )),
                Some("exec" | "x" | "dlx")
                    if argv[j..].iter().any(|a| a == "-c" || a.starts_with("--call")) =>
                {
                    Err(format!("{} exec -c runs its argument through a shell", argv[i]))
                }
                _ => Ok(None),
            }
        }
        "uv" | "pipx" | "poetry" | "pdm" | "hatch" | "rye" => {
            // `uv run [opts] CMD`, `pipx run PKG`: the next program is what runs.
            let k = argv[j..].iter().position(|a| a == "run").map(|p| j + p + 1);
            Ok(k.map(|k| opts_then(k, &["--with", "--python", "-p", "--from", "--spec"])))
        }
        "uvx" => Ok(Some(opts_then(j, &["--with", "--python", "-p", "--from"]))),
        _ => Ok(None),
    }
}

/// Whether an interpreter at `argv[i]` is given code inline.
fn inline_code(argv: &[String], i: usize) -> Option<String> {
    let prog = program(&argv[i]);
    let args = &argv[i + 1..];
    let first_operand = |takes_value: &[&str]| -> usize {
        let mut k = 0;
        while let Some(a) = args.get(k) {
            if !a.starts_with('-') || a == "-" || a == "--" {
                break;
            }
            k += if takes_value.contains(&a.as_str()) { 2 } else { 1 };
        }
        k
    };
    let says = |what: &str| Some(format!("{} {what}", argv[i]));
    match prog.as_str() {
        "python" | "pypy" | "py" => {
            // Interpreter options end at the script, at `-`, or at `-m MODULE`.
            let mut k = 0;
            while let Some(a) = args.get(k) {
                if !a.starts_with('-') || a == "-" || a == "--" {
                    return None;
                }
                if cluster_has(a, 'c', &['W', 'X', 'm']) {
                    return Some(format!("{} -c runs code given on the command line", argv[i]));
                }
                if cluster_has(a, 'm', &['W', 'X']) {
                    return None;
                }
                k += if a == "-W" || a == "-X" || a == "--check-hash-based-pycs" { 2 } else { 1 };
            }
            None
        }
        "node" | "nodejs" | "deno" | "bun" => {
            let inline = args.iter().any(|a| {
                a == "-e"
                    || a == "-p"
                    || a == "-pe"
                    || a == "--eval"
                    || a == "--print"
                    || a.starts_with("--eval=")
                    || a.starts_with("--print=")
                    || a.starts_with("data:")
                    || a.contains("=data:")
            });
            let sub = args.iter().find(|a| !a.starts_with('-'));
            let subcommand = matches!(prog.as_str(), "deno" | "bun")
                && sub.is_some_and(|a| a == "eval" || (prog == "deno" && a == "task"));
            (inline || subcommand)
                .then(|| format!("{} -e/--eval runs code given on the command line", argv[i]))
        }
        "perl" | "ruby" => {
            let end = first_operand(&["-I", "-M", "-m", "-C", "-x", "-r"]);
            args[..end.min(args.len())]
                .iter()
                .any(|a| {
                    cluster_has(a, 'e', &['I', 'M', 'm', 'x', 'r'])
                        || cluster_has(a, 'E', &['I', 'M', 'm', 'x', 'r'])
                })
                .then(|| format!("{} -e runs code given on the command line", argv[i]))
        }
        "php" => args
            .iter()
            .any(|a| a == "-r" || a == "--run" || a.starts_with("-r"))
            .then(|| format!("{} -r runs code given on the command line", argv[i])),
        "lua" | "luajit" | "rscript" | "osascript" | "julia" | "tclsh" | "wish" => args
            .iter()
            .any(|a| a == "-e" || a == "--eval" || a == "-E")
            .then(|| format!("{} -e runs code given on the command line", argv[i])),
        "awk" | "gawk" | "mawk" | "nawk" => {
            says("runs an awk program given on the command line, which can run shell commands")
        }
        _ => None,
    }
}

/// Why `argv` runs a shell (or code given inline) instead of a program, if it does. Wrappers
/// are followed to the program they run.
pub fn shell_use(argv: &[String]) -> Option<String> {
    let mut i = 0;
    for _ in 0..16 {
        let arg = argv.get(i)?;
        let prog = program(arg);
        if SHELLS.contains(&prog.as_str()) {
            return Some(format!("{arg} is a shell; give the server's argv directly"));
        }
        let lower = arg.to_ascii_lowercase();
        if SHELL_SCRIPT_SUFFIXES.iter().any(|s| lower.ends_with(s)) {
            return Some(format!("{arg} is a shell script; give the server's argv directly"));
        }
        if RUN_VIA_SHELL.contains(&prog.as_str()) {
            return Some(format!("{arg} runs commands through a shell"));
        }
        if let Some(why) = inline_code(argv, i) {
            return Some(why);
        }
        match unwrap(argv, i) {
            Err(why) => return Some(why),
            Ok(Some(next)) if next > i => i = next,
            Ok(_) => return None,
        }
    }
    Some("the command nests more wrappers than a reviewer can follow".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Vec<String> {
        s.split(' ').map(str::to_string).collect()
    }

    #[test]
    fn shells_and_inline_code_are_found_through_wrappers() {
        for cmd in [
            "sh -c x",
            "bash -lc x",
            "sh -ec x",
            "/bin/bash script",
            "/usr/bin/env sh -c x",
            "env -i PATH=/bin bash -c x",
            "env -S sh_-c_x",
            "busybox sh -c x",
            "busybox ash",
            "nice -n 5 timeout 10 bash -c x",
            "nohup zsh x",
            "python -c x",
            "python3 -Ic x",
            "/usr/local/bin/python3.12 -uc x",
            "node -e x",
            "node --eval=x",
            "nodejs -p x",
            "node --import data:text/javascript,x",
            "deno eval x",
            "bun -e x",
            "perl -e x",
            "perl -lne x",
            "ruby -e x",
            "php -r x",
            "awk BEGIN{system(x)}",
            "npx -c x",
            "npm run start",
            "npm start",
            "yarn run serve",
            "uv run bash -c x",
            "uvx --from pkg python -c x",
            "xargs -n 1 sh -c x",
            "./start.sh",
            "/app/entrypoint.bash",
            "sudo -s",
            "flock /tmp/l -c x",
            "su -c x",
            "make serve",
            "watch x",
            "pwsh -Command x",
            "stdbuf -o L dash",
            "deno task serve",
            "bun run serve",
        ] {
            assert!(shell_use(&v(cmd)).is_some(), "{cmd} passed");
        }
    }

    #[test]
    fn plain_programs_pass() {
        for cmd in [
            "node dist/index.js stdio",
            "python -m mcp_server_fetch",
            "python3 -u server.py",
            "python -W ignore -m server",
            "npx -y @modelcontextprotocol/server-everything",
            "uvx mcp-server-git --repository /data",
            "uv run --with mcp server.py",
            "env LOG_LEVEL=info node server.js",
            "/usr/bin/env node server.js",
            "timeout 3600 node server.js",
            "java -jar server.jar",
            "/server --config /etc/server.yaml",
            "perl server.pl",
            "python -m server -c config.yaml",
            "bun run dist/server.js",
            "ruby -w server.rb",
            "deno run --allow-net server.ts",
            "bun run.ts",
            "node --enable-source-maps dist/index.js",
        ] {
            assert_eq!(shell_use(&v(cmd)), None, "{cmd}");
        }
    }
}
