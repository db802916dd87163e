#include "docs.hpp"

#include <cstdio>
#include <sstream>
#include <vector>

#include "os/kernel.hpp"

namespace clutch_cli {

namespace {

struct option_doc {
  std::vector<std::string> names;  // "--workers", "-i"; empty for a positional
  std::string value;               // "TEXT", "INT"; empty for a flag
  std::string help;
};

struct command_doc {
  std::string name, help;
  std::vector<option_doc> options;
  std::vector<std::string> positionals;
};

std::vector<command_doc> describe(CLI::App& app) {
  std::vector<command_doc> out;
  // A command in the group "" is hidden from --help, and so from these too.
  for (CLI::App* sub : app.get_subcommands([](CLI::App* s) { return !s->get_group().empty(); })) {
    command_doc c{sub->get_name(), sub->get_description(), {}, {}};
    for (const CLI::Option* opt : sub->get_options()) {
      if (opt == sub->get_help_ptr() || opt->get_group().empty()) continue;
      if (opt->get_positional()) {
        c.positionals.push_back(opt->get_name(true, false));
        continue;
      }
      option_doc d;
      for (const auto& l : opt->get_lnames()) d.names.push_back("--" + l);
      for (const auto& s : opt->get_snames()) d.names.push_back("-" + s);
      if (opt->get_type_size() != 0) d.value = opt->get_type_name();
      d.help = opt->get_description();
      c.options.push_back(std::move(d));
    }
    out.push_back(std::move(c));
  }
  return out;
}

// roff: a backslash is written \e, a minus \-, any other character than ASCII \[uXXXX] (groff reads ASCII), and
// a line may not start with . or '.
std::string roff(const std::string& text) {
  std::string out;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const auto ch = static_cast<unsigned char>(text[i]);
    if (ch == '\\') {
      out += "\\e";
    } else if (ch == '-') {
      out += "\\-";
    } else if (ch < 0x80) {
      out += static_cast<char>(ch);
    } else {
      // UTF-8: the lead byte tells the length; the help texts are ours, so well formed.
      const int more = ch >= 0xf0 ? 3 : ch >= 0xe0 ? 2 : 1;
      unsigned code = ch & (0x3f >> more);
      for (int k = 0; k < more && i + 1 < text.size(); ++k) code = (code << 6) | (text[++i] & 0x3f);
      char buf[16];
      std::snprintf(buf, sizeof buf, "\\[u%04X]", code);
      out += buf;
    }
  }
  if (!out.empty() && (out[0] == '.' || out[0] == '\'')) out.insert(0, "\\&");
  return out;
}

// Single quotes for a shell word; the help texts carry no single quote of their own, but a future one stays safe.
std::string quoted(const std::string& text) {
  std::string out = "'";
  for (char ch : text) out += ch == '\'' ? std::string("'\\''") : std::string(1, ch);
  return out + "'";
}

std::string joined(const std::vector<std::string>& words, const std::string& sep = " ") {
  std::string out;
  for (const auto& w : words) out += (out.empty() ? "" : sep) + w;
  return out;
}

std::string bash_script(const std::vector<command_doc>& commands) {
  std::vector<std::string> names;
  for (const auto& c : commands) names.push_back(c.name);
  std::ostringstream s;
  s << "# bash completion for clutch (`clutch completion bash`). Load it with\n"
    << "#   source <(clutch completion bash)\n"
    << "# or install it as /usr/share/bash-completion/completions/clutch.\n"
    << "_clutch() {\n"
    << "  local cur=${COMP_WORDS[COMP_CWORD]} cmd=\"\" i\n"
    << "  for ((i = 1; i < COMP_CWORD; i++)); do\n"
    << "    [[ ${COMP_WORDS[i]} == -- ]] && return 0  # PROGRAM [ARGS...]: the program's own words\n"
    << "    if [[ -z $cmd && ${COMP_WORDS[i]} != -* ]]; then cmd=${COMP_WORDS[i]}; fi\n"
    << "  done\n"
    << "  if [[ -z $cmd ]]; then\n"
    << "    COMPREPLY=($(compgen -W " << quoted(joined(names) + " --help --version") << " -- \"$cur\"))\n"
    << "    return 0\n"
    << "  fi\n"
    << "  local opts=\"\"\n"
    << "  case $cmd in\n";
  for (const auto& c : commands) {
    std::vector<std::string> words{"--help"};
    for (const auto& o : c.options) words.insert(words.end(), o.names.begin(), o.names.end());
    s << "    " << c.name << ") opts=" << quoted(joined(words)) << " ;;\n";
  }
  s << "  esac\n"
    << "  if [[ $cur == -* ]]; then\n"
    << "    COMPREPLY=($(compgen -W \"$opts\" -- \"$cur\"))\n"
    << "  else\n"
    << "    COMPREPLY=($(compgen -f -- \"$cur\"))\n"
    << "  fi\n"
    << "}\n"
    << "complete -o filenames -F _clutch clutch\n";
  return s.str();
}

// zsh's _arguments spec of one option: '(-i --workers)'{-i,--workers}'[help]:TEXT:_files'. In the help, [ ] : and
// \ are escaped for _arguments.
std::string zsh_spec(const option_doc& o) {
  std::string help;
  for (char ch : o.help) {
    if (ch == '[' || ch == ']' || ch == ':' || ch == '\\') help += '\\';
    help += ch;
  }
  std::string names = o.names.front();
  if (o.names.size() > 1) names = quoted("(" + joined(o.names) + ")") + "{" + joined(o.names, ",") + "}";
  return names + quoted("[" + help + "]" + (o.value.empty() ? "" : ":" + o.value + ":_files"));
}

std::string zsh_script(const std::vector<command_doc>& commands) {
  std::ostringstream s;
  s << "#compdef clutch\n"
    << "# zsh completion for clutch (`clutch completion zsh`). Install it as _clutch in a folder of $fpath\n"
    << "# (/usr/share/zsh/vendor-completions), or load it with: source <(clutch completion zsh)\n"
    << "_clutch() {\n"
    << "  local -a commands\n"
    << "  commands=(\n";
  for (const auto& c : commands) {
    std::string help;
    for (char ch : c.help) help += ch == ':' ? std::string("\\:") : std::string(1, ch);
    s << "    " << quoted(c.name + ":" + help) << "\n";
  }
  s << "  )\n"
    << "  if (( CURRENT == 2 )); then\n"
    << "    _describe -t commands 'clutch command' commands\n"
    << "    return\n"
    << "  fi\n"
    << "  local cmd=${words[2]}\n"
    << "  shift 1 words; (( CURRENT-- ))\n"
    << "  case $cmd in\n";
  for (const auto& c : commands) {
    s << "    " << c.name << ")\n      _arguments -s";
    for (const auto& o : c.options) s << " \\\n        " << zsh_spec(o);
    s << " \\\n        '*:file:_files'\n      ;;\n";
  }
  s << "  esac\n"
    << "}\n"
    << "if [[ $zsh_eval_context[-1] == loadautofunc ]]; then\n"
    << "  _clutch \"$@\"\n"
    << "else\n"
    << "  compdef _clutch clutch\n"
    << "fi\n";
  return s.str();
}

}  // namespace

std::string man_page(CLI::App& app, const std::string& version) {
  std::ostringstream s;
  s << ".TH CLUTCH 1 \"\" \"clutch " << roff(version) << "\" \"User Commands\"\n"
    << ".SH NAME\nclutch \\- any program as a cluster: a process supervisor for Node.js and other programs\n"
    << ".SH SYNOPSIS\n.B clutch\n.I COMMAND\n[\\fIOPTIONS\\fR] [\\fB\\-\\-\\fR \\fIPROGRAM\\fR [\\fIARGS\\fR...]]\n"
    << ".SH DESCRIPTION\n"
    << "clutch runs a program as a cluster of worker processes that share its ports: in the foreground with\n"
    << ".BR \"clutch run\" ,\nor under a daemon of this user that the other commands drive (started by\n"
    << ".BR \"clutch start\" ).\n"
    << "A Node.js app that calls listen() runs unchanged, and PM2's ecosystem files are read as they are.\n"
    << "Each command's\n.B \\-\\-help\nprints what this page says of it.\n"
    << ".SH COMMANDS\n";
  for (const auto& c : describe(app)) {
    s << ".SS \"clutch " << roff(c.name);
    for (const auto& p : c.positionals) s << " " << roff(p);
    s << "\"\n" << roff(c.help) << "\n";
    for (const auto& o : c.options) {
      s << ".TP\n";
      std::string head;
      for (const auto& n : o.names) head += (head.empty() ? "" : ", ") + std::string("\\fB") + roff(n) + "\\fR";
      if (!o.value.empty()) head += " \\fI" + roff(o.value) + "\\fR";
      s << head << "\n" << roff(o.help) << "\n";
    }
  }
  s << ".SH ENVIRONMENT\n"
    << ".TP\n.B CLUTCH_HOME\nwhere the daemon keeps its files (default: ~/.clutch)\n"
    << ".TP\n.B CLUTCH_TIMEOUT_MS\nhow long a command waits for the daemon's answer (0: no bound)\n"
    << ".TP\n.B XDG_RUNTIME_DIR\nthe daemon's control socket is clutch.sock there when CLUTCH_HOME is not set\n"
    << ".TP\n.B TMPDIR\nwhere the Node.js workers' preload is written (default: /tmp)\n"
    << ".SH FILES\n"
    << ".TP\n.I $CLUTCH_HOME/apps.json\nthe live table of apps, which a daemon restores after a crash\n"
    << ".TP\n.I $CLUTCH_HOME/dump.json\nthe apps of the last clutch save, for clutch resurrect\n"
    << ".TP\n.I $CLUTCH_HOME/daemon.log\nwhat the daemon did, and why\n"
    << ".TP\n.I $CLUTCH_HOME/logs/\nthe apps' output\n"
    << ".TP\n.I $CLUTCH_HOME/dashboard.token\nthe token the web dashboard's actions need\n"
    << ".SH EXIT STATUS\n0 when the command did what it says; 1 when it failed (the reason is on standard error);\n"
    << "2 for a usage error. clutch run exits with how its workers ended: 0, a worker's code, or 128+signal.\n"
    << ".SH NOTES\nclutch needs Linux " << clutch::os::oldest_kernel
    << " or later (pidfds), and says so on an older kernel.\n"
    << ".SH SEE ALSO\n.BR systemd.unit (5),\n.BR node (1)\n";
  return s.str();
}

std::optional<std::string> completion_script(CLI::App& app, const std::string& shell) {
  if (shell == "bash") return bash_script(describe(app));
  if (shell == "zsh") return zsh_script(describe(app));
  return std::nullopt;
}

}  // namespace clutch_cli
