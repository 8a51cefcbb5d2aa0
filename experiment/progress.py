"""A one-line progress bar, and durations as text."""
import shutil
import sys


class Progress:
    """A one-line progress bar redrawn in place on a terminal; silent when output is redirected."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self._drawn = False

    def update(self, text):
        if self.tty:
            width = shutil.get_terminal_size().columns - 1     # never wrap: \r must reach column 0
            self.stream.write("\r" + text[:width].ljust(width))
            self.stream.flush()
            self._drawn = True

    def finish(self, line):
        """Clear the bar and print `line` (if any) in its place."""
        if self._drawn:
            self.stream.write("\r" + " " * (shutil.get_terminal_size().columns - 1) + "\r")
            self._drawn = False
        if line:
            print(line, file=self.stream, flush=True)


def clock(seconds):
    """12m05s, or 1:02:03 from an hour on."""
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 \
        else f"{seconds // 60}m{seconds % 60:02d}s"
