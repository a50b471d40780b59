"""``keras-effnet-export`` in a checkout: the command is keras_effnet.commands.export
(``--help`` prints its documentation)."""

from keras_effnet.commands.export import run

if __name__ == "__main__":
    run()
