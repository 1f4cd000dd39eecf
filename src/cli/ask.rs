//! Asking the person at the terminal before an act that cannot be taken back
//! (`approve`, `abort`); `--yes` answers for scripts.

use std::io::{BufRead, IsTerminal, Write};

use crate::{Error, Result};

/// Asks `question` ("abort `web-fix`?") and reads y/N. Without a terminal nobody can
/// answer: a usage error saying `instead` ("look at the gate above and pass --yes to
/// approve it").
pub fn confirm(question: &str, instead: &str) -> Result<bool> {
    if !std::io::stdin().is_terminal() {
        return Err(Error::Usage(format!(
            "not a terminal, so nobody can confirm: {instead}"
        )));
    }
    print!("{question} [y/N] ");
    std::io::stdout()
        .flush()
        .map_err(|e| Error::io("cannot write to the terminal", e))?;
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| Error::io("cannot read the answer", e))?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}
