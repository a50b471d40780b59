"""``keras-effnet-train`` in a checkout: the command is keras_effnet.commands.train
(``--help`` prints its documentation)."""

from keras_effnet.commands.train import run

if __name__ == "__main__":
    run()
