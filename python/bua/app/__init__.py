"""The application layer: the `bua` console script (`cli`), `bua demo` (`demo`) and the shell
commands over an exported bundle (`shell`). It may import every other layer; nothing imports it."""
