"""``keras-effnet-search`` in a checkout: the command is keras_effnet.commands.search
(``--help`` prints its documentation)."""

from keras_effnet.commands.search import run

if __name__ == "__main__":
    run()
