// The CLI's help in the forms a system installs: a man page and shell completions, made from the same CLI11
// tree that `clutch --help` prints, so that none of them can fall behind a new command or option.
//
//   std::cout << clutch_cli::man_page(app, CLUTCH_VERSION);          // `clutch manpage` (the .deb's clutch.1)
//   std::cout << *clutch_cli::completion_script(app, "bash");        // `clutch completion bash|zsh`
#pragma once

#include <CLI/CLI.hpp>
#include <optional>
#include <string>

namespace clutch_cli {

// roff for man(7): every command with its options and their help, then the environment, files and exit codes.
std::string man_page(CLI::App& app, const std::string& version);

// A script for bash (bash-completion's `complete -F`) or zsh (`#compdef`): the commands, then the chosen
// command's options; file names elsewhere (a TOML file, an app.js). nullopt for any other shell.
std::optional<std::string> completion_script(CLI::App& app, const std::string& shell);

}  // namespace clutch_cli
